//! The `multipult` binary; see `multipult --help`.

fn main() -> std::process::ExitCode {
    multipult::cli::main()
}
