//! Files that hold secrets: created private (0600), in directories created private (0700).

use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700 (a directory that exists is left as it
/// is), for the key directories an operator names.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub fn write_private_file(path: &Path, contents: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}
