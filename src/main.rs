//! The `multipult` binary; see `multipult --help`.

// A GraphQL server allocates for every request (documents, values, JSON): mimalloc serves those
// small, short-lived allocations with less locking than the system allocator across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    multipult::cli::main()
}
