//! The `multipult` binary; see `multipult --help`.

// A GraphQL server allocates for every request (documents, values, JSON): mimalloc serves those
// small, short-lived allocations with less locking than the system allocator across threads
// (`allocator/`: mimalloc, asked for an alignment only where its plain calls do not give it).
#[global_allocator]
static ALLOCATOR: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> std::process::ExitCode {
    multipult::cli::main()
}
