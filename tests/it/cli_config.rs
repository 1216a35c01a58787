//! Configuration mistakes, seen from the real binary in a temp dir with a clean environment:
//! every one is a single `stark-sweep: ` line on stderr that names the variable at fault, exit
//! 78, no panic, and never the key text. `webhook list` is the API-calling command; a good
//! configuration pointed at a closed port gets exit 75 and one "could not connect" line.
//! Also `keygen`'s file rules and the `webhook` rules that need no API.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use stark_sweep::starkbank::keys;

use crate::util::{cmd, stderr, stdout};

/// `n` distinct local URLs with nothing listening (bound together, so distinct, then released).
fn closed_port_urls(n: usize) -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())).collect()
}

fn closed_port_url() -> String {
    closed_port_urls(1).remove(0)
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c: Command = cmd(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Lines of the base64 body of a PEM: what must never be echoed on stderr. (The last lines of a
/// SEC1 key hold the public point, which keygen rightly prints; see `secret_line`.)
fn secret_lines(pem: &str) -> Vec<String> {
    pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).map(str::to_string).collect()
}

fn assert_no_panic_or_secret(out: &Output, secrets: &[String]) {
    let err = stderr(out);
    assert!(!err.contains("panicked"), "{err}");
    for s in secrets {
        // Any 16 characters of a key line would be a leak.
        for chunk in s.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!err.contains(chunk), "key text leaked: {err}");
        }
    }
}

/// Exit 78 and exactly one stderr line, `stark-sweep: ...`, mentioning every `needle`.
fn assert_config_error(out: &Output, needles: &[&str], secrets: &[String]) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(78), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(lines[0].starts_with("stark-sweep: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "expected `{n}` in: {err}");
    }
    assert_no_panic_or_secret(out, secrets);
    lines[0].to_string()
}

/// Exit 75 with one `stark-sweep: ` line saying it could not connect to `url`; other stderr
/// lines may only be the client's retry warnings.
fn assert_could_not_connect(out: &Output, url: &str, secrets: &[String]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(75), "stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("stark-sweep: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "the error is the last line: {err}");
    assert!(errors[0].contains(&format!("could not connect to {url}")), "{err}");
    for other in err.lines().filter(|l| !l.starts_with("stark-sweep: ")) {
        assert!(other.contains("WARN") && other.contains("retrying"), "unexpected stderr line: {other}");
    }
    assert_no_panic_or_secret(out, secrets);
}

fn key_pem() -> String {
    keys::private_key_pem(&keys::generate()).unwrap()
}

fn write_key(dir: &Path) -> (String, Vec<String>) {
    let pem = key_pem();
    std::fs::write(dir.join("key.pem"), &pem).unwrap();
    let secrets = secret_lines(&pem);
    (pem, secrets)
}

fn p256_pem(dir: &Path) -> String {
    let path = dir.join("p256.pem");
    let out = Command::new("openssl")
        .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed ({e}); run scripts/test"));
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn missing_project_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secrets) = write_key(dir.path());
    let out = run(dir.path(), &["webhook", "list"], &[("STARKBANK_PRIVATE_KEY_PATH", "key.pem")]);
    assert_config_error(&out, &["STARKBANK_PROJECT_ID"], &secrets);
}

#[test]
fn project_id_that_is_not_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secrets) = write_key(dir.path());
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "project/12 3"), ("STARKBANK_PRIVATE_KEY_PATH", "key.pem")],
    );
    assert_config_error(&out, &["STARKBANK_PROJECT_ID", "project/12 3"], &secrets);
}

#[test]
fn missing_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY_PATH", "no-such-key.pem")],
    );
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY_PATH", "no-such-key.pem", "keygen"], &[]);
}

#[test]
fn no_key_configured_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["webhook", "list"], &[("STARKBANK_PROJECT_ID", "1")]);
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY_PATH", "keygen"], &[]);
}

#[test]
fn p256_key_file_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pem = p256_pem(dir.path());
    let secrets = secret_lines(&pem);
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY_PATH", "p256.pem")],
    );
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY_PATH", "P-256", "secp256k1"], &secrets);
    // The same key given as text.
    let out = run(dir.path(), &["webhook", "list"], &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY", &pem)]);
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY", "P-256"], &secrets);
}

#[test]
fn broken_key_text_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let pem = key_pem();
    // Truncated in the middle of the base64: not decodable.
    let broken: String = pem.chars().take(pem.len() / 2).chain("\n-----END EC PRIVATE KEY-----\n".chars()).collect();
    let secrets = secret_lines(&broken);
    let out =
        run(dir.path(), &["webhook", "list"], &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY", &broken)]);
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY"], &secrets);
}

#[test]
fn both_key_sources_set_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, secrets) = write_key(dir.path());
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY_PATH", "key.pem"), ("STARKBANK_PRIVATE_KEY", &pem)],
    );
    assert_config_error(&out, &["STARKBANK_PRIVATE_KEY_PATH", "STARKBANK_PRIVATE_KEY"], &secrets);
}

#[test]
fn key_with_literal_backslash_n_escapes_works() {
    let dir = tempfile::tempdir().unwrap();
    let pem = key_pem();
    let one_line = pem.replace('\n', "\\n");
    assert!(!one_line.contains('\n'));
    let url = closed_port_url();
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY", &one_line), ("STARKBANK_API_URL", &url)],
    );
    assert_could_not_connect(&out, &url, &secret_lines(&pem));
}

#[test]
fn good_configuration_and_unreachable_api_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secrets) = write_key(dir.path());
    let url = closed_port_url();
    let out = run(
        dir.path(),
        &["webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY_PATH", "key.pem"), ("STARKBANK_API_URL", &url)],
    );
    assert_could_not_connect(&out, &url, &secrets);
    // With -qq only the error line remains.
    let out = run(
        dir.path(),
        &["-qq", "webhook", "list"],
        &[("STARKBANK_PROJECT_ID", "1"), ("STARKBANK_PRIVATE_KEY_PATH", "key.pem"), ("STARKBANK_API_URL", &url)],
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

/// Regression: dotenvy's parse error quotes the whole broken line, which is often the key.
#[test]
fn broken_dotenv_names_the_variable_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pem = key_pem();
    // An unclosed quote: the classic way to paste a multi-line key into .env.
    std::fs::write(dir.path().join(".env"), format!("STARKBANK_PROJECT_ID=1\nSTARKBANK_PRIVATE_KEY=\"{pem}")).unwrap();
    let out = run(dir.path(), &["webhook", "list"], &[]);
    assert_config_error(&out, &[".env", "line 2", "STARKBANK_PRIVATE_KEY"], &secret_lines(&pem));
    // A line that is not NAME=value at all.
    std::fs::write(dir.path().join(".env"), "STARKBANK_PROJECT_ID=1\nthis is not a setting\n").unwrap();
    let out = run(dir.path(), &["webhook", "list"], &[]);
    let line = assert_config_error(&out, &[".env", "line 2"], &[]);
    assert!(!line.contains("this is not a setting"), "{line}");
}

#[test]
fn dotenv_is_used_when_unset_and_overridden_by_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secrets) = write_key(dir.path());
    let urls = closed_port_urls(3);
    let (from_file, from_env, from_flag) = (&urls[0], &urls[1], &urls[2]);
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# stark-sweep\nSTARKBANK_PROJECT_ID=\"not an id\"\nSTARKBANK_PRIVATE_KEY_PATH=key.pem\nSTARKBANK_API_URL={from_file}\n"
        ),
    )
    .unwrap();
    // .env alone: its (bad) project id is the one used.
    let out = run(dir.path(), &["webhook", "list"], &[]);
    assert_config_error(&out, &["STARKBANK_PROJECT_ID", "not an id"], &secrets);
    // The environment overrides .env; .env still supplies the key path and the URL.
    let out = run(dir.path(), &["webhook", "list"], &[("STARKBANK_PROJECT_ID", "77")]);
    assert_could_not_connect(&out, from_file, &secrets);
    let out = run(dir.path(), &["webhook", "list"], &[("STARKBANK_PROJECT_ID", "77"), ("STARKBANK_API_URL", from_env)]);
    assert_could_not_connect(&out, from_env, &secrets);
    // Flags override both.
    let out = run(
        dir.path(),
        &["webhook", "list", "--api-url", from_flag, "--project-id", "78"],
        &[("STARKBANK_PROJECT_ID", "also not an id"), ("STARKBANK_API_URL", from_env)],
    );
    assert_could_not_connect(&out, from_flag, &secrets);
}

/// A named configuration file (`--env-file` or `STARK_SWEEP_ENV_FILE`) is read instead of
/// `./.env`, from any working directory, below the environment; a missing one is a config error.
#[test]
fn env_file_is_read_from_anywhere_instead_of_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let (_, secrets) = write_key(&etc);
    let key = etc.join("key.pem");
    let urls = closed_port_urls(3);
    let file = etc.join("stark-sweep.env");
    std::fs::write(
        &file,
        format!(
            "STARKBANK_PROJECT_ID=77\nSTARKBANK_PRIVATE_KEY_PATH={}\nSTARKBANK_API_URL={}\n",
            key.display(),
            urls[0]
        ),
    )
    .unwrap();
    // ./.env of the working directory is ignored once a file is named.
    std::fs::write(dir.path().join(".env"), format!("STARKBANK_API_URL={}\n", urls[1])).unwrap();
    let path = file.to_str().unwrap();
    let out = run(dir.path(), &["--env-file", path, "webhook", "list"], &[]);
    assert_could_not_connect(&out, &urls[0], &secrets);
    let out = run(dir.path(), &["webhook", "list", &format!("--env-file={path}")], &[]);
    assert_could_not_connect(&out, &urls[0], &secrets);
    let out = run(dir.path(), &["webhook", "list"], &[("STARK_SWEEP_ENV_FILE", path)]);
    assert_could_not_connect(&out, &urls[0], &secrets);
    // The environment still wins over the file.
    let out = run(dir.path(), &["webhook", "list"], &[("STARK_SWEEP_ENV_FILE", path), ("STARKBANK_API_URL", &urls[2])]);
    assert_could_not_connect(&out, &urls[2], &secrets);
    // A named file that is not there.
    let missing = dir.path().join("nope.env");
    let out = run(dir.path(), &["--env-file", missing.to_str().unwrap(), "status"], &[]);
    assert_config_error(&out, &["STARK_SWEEP_ENV_FILE", "nope.env", "cannot read"], &[]);
}

#[test]
fn keygen_writes_private_0600_and_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = run(d, &["keygen", "--out", "."], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let private = d.join("private-key.pem");
    let public = d.join("public-key.pem");
    let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key mode {mode:o}");
    let private_text = std::fs::read_to_string(&private).unwrap();
    let public_text = std::fs::read_to_string(&public).unwrap();
    let key = keys::parse_private_key(&private_text).unwrap();
    assert_eq!(&keys::parse_public_key(&public_text).unwrap(), key.verifying_key());
    assert!(stdout(&out).contains(public_text.trim()), "keygen prints the public key to upload");
    assert_no_panic_or_secret(&out, &secret_lines(&private_text));
    // The first base64 line holds the whole secret (DER bytes 7..39): never printed.
    let secret_line = &secret_lines(&private_text)[0];
    assert!(!stdout(&out).contains(&secret_line[8..56]) && !stdout(&out).contains("PRIVATE KEY"), "{}", stdout(&out));

    let again = run(d, &["keygen", "--out", "."], &[]);
    assert_config_error(&again, &["private-key.pem", "--force"], &secret_lines(&private_text));
    assert_eq!(std::fs::read_to_string(&private).unwrap(), private_text, "the key must be untouched");
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_text);

    let forced = run(d, &["keygen", "--out", ".", "--force"], &[]);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    let new_private = std::fs::read_to_string(&private).unwrap();
    assert_ne!(new_private, private_text);
    let new_key = keys::parse_private_key(&new_private).unwrap();
    assert_eq!(&keys::parse_public_key(&std::fs::read_to_string(&public).unwrap()).unwrap(), new_key.verifying_key());
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn webhook_delete_needs_yes_and_register_needs_https() {
    let dir = tempfile::tempdir().unwrap();
    // Refused before any configuration is read: no credentials are needed to be told.
    let out = run(dir.path(), &["webhook", "delete", "5656565656565656"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).starts_with("stark-sweep: ") && stderr(&out).contains("--yes"), "{}", stderr(&out));

    let out = run(dir.path(), &["webhook", "register", "--url", "http://sweep.example.com/webhook"], &[]);
    assert_config_error(&out, &["STARK_SWEEP_WEBHOOK_URL", "https://"], &[]);
}
