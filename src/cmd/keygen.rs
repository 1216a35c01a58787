//! `stark-sweep keygen`: a secp256k1 key pair in the official SDK's formats.

use anyhow::Context as _;

use super::{Ctx, Status, print};
use crate::cli::KeygenArgs;
use crate::error;
use crate::starkbank::keys;

pub fn run(_ctx: &Ctx, args: &KeygenArgs) -> anyhow::Result<Status> {
    let private_path = args.out.join("private-key.pem");
    let public_path = args.out.join("public-key.pem");
    if !args.force {
        for p in [&private_path, &public_path] {
            if p.exists() {
                return Err(error::config(format!(
                    "{} already exists; refusing to overwrite a key (to replace it: --force)",
                    p.display()
                )));
            }
        }
    }
    crate::files::create_private_dir(&args.out).map_err(|e| {
        error::config(format!("{}: cannot create the directory: {e}; to fix: choose another --out", args.out.display()))
    })?;
    let key = keys::generate();
    let private_pem = keys::private_key_pem(&key)?;
    let public_pem = keys::public_key_pem(key.verifying_key())?;
    crate::files::write_private_file(&private_path, private_pem.as_bytes(), args.force)
        .with_context(|| format!("writing {}", private_path.display()))?;
    crate::files::write_private_file(&public_path, public_pem.as_bytes(), args.force)
        .with_context(|| format!("writing {}", public_path.display()))?;
    // The public key is not secret; make it readable like the SDK's.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&public_path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting permissions of {}", public_path.display()))?;
    }
    print(&format!(
        "wrote {} (mode 0600, keep it secret) and {}\n\n{}\nnext: upload this public key to a Stark Bank project (Web Banking > Integrations > New Project),\nthen set STARKBANK_PROJECT_ID to the project's id and STARKBANK_PRIVATE_KEY_PATH={}\n",
        private_path.display(),
        public_path.display(),
        public_pem,
        private_path.display()
    ))?;
    Ok(Status::Success)
}
