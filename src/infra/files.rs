//! Files the server writes that may hold personal data or secrets (the SQLite database, mail in
//! the outbox, development secrets): folders only the owner can enter (0700), files only the
//! owner can read (0600).

use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) readable only by the owner. A folder that exists is left
/// as it is: it may be shared on purpose (`/tmp`, a mounted volume); the files in it are private.
///
/// # Errors
/// The folder cannot be created.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a file readable only by the owner.
pub fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Makes sure `path` exists and only its owner can read it (SQLite then creates its `-wal` and
/// `-shm` files with the same mode).
///
/// # Errors
/// The file cannot be created or its mode set.
pub fn private_file(path: &Path) -> io::Result<()> {
    private_file_options().open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
