//! `cargo xtask fuzz`: a bounded run of every fuzz target in `fuzz/`, as
//! CI runs it.
//!
//! The targets are built once, then each runs for its share of the budget
//! (`--seconds`, three minutes in all by default) from its committed
//! corpus. What a run learns goes to a scratch corpus beside the build,
//! so the committed one changes only when someone minimises it in on
//! purpose (`cargo fuzz cmin`). A crash, a panic, an input that takes
//! longer than `PER_INPUT_SECONDS` or an allocation past libFuzzer's
//! memory limit fails the run, after every target has had its turn, with
//! the inputs that did it (under `fuzz/artifacts/<target>/`).
//!
//! cargo-fuzz passes the compiler flags of a nightly toolchain (the
//! coverage instrumentation libFuzzer is guided by); the stable compiler
//! takes them when `RUSTC_BOOTSTRAP=1`, which is set for these builds
//! only. The targets are built without a sanitizer: opsgate has no unsafe
//! code of its own for one to watch, and without it the build and every
//! execution are faster, which matters in a run of three minutes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// The budget of all targets together, by default.
pub const DEFAULT_SECONDS: u64 = 180;

/// The longest one input may take before it counts as a failure (a hang
/// is a way for a sender to stop the server too).
const PER_INPUT_SECONDS: u64 = 10;

/// The flags every `cargo fuzz` call is given, the same each time so that
/// `run` finds the build of `build` up to date.
const BUILD_FLAGS: &[&str] = &["--release", "--sanitizer", "none", "--codegen-units", "16"];

/// Builds the fuzz targets and runs them, `seconds` in all.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let fuzz_dir = root.join("fuzz");
    let target_dir = target_dir(root);
    let cargo_fuzz = |subcommand: &str| {
        let mut command = Command::new("cargo");
        command
            .arg("fuzz")
            .arg(subcommand)
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1");
        command
    };

    let version = cargo_fuzz("--version").output();
    if !version.is_ok_and(|output| output.status.success()) {
        bail!("cargo-fuzz is not installed: `cargo install cargo-fuzz --locked` installs it");
    }
    let listed = cargo_fuzz("list")
        .output()
        .context("listing the fuzz targets")?;
    if !listed.status.success() {
        bail!(
            "cargo fuzz list: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
    }
    let targets: Vec<String> = String::from_utf8(listed.stdout)?
        .lines()
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("fuzz/ lists no targets");
    }

    let started = Instant::now();
    let status = cargo_fuzz("build")
        .args(BUILD_FLAGS)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("starting cargo fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    let built_in = started.elapsed();

    let share = (seconds / targets.len() as u64).max(1);
    println!(
        "fuzz: built in {} s; {} targets, {share} s each",
        built_in.as_secs(),
        targets.len()
    );
    let mut failed = Vec::new();
    for target in &targets {
        let scratch = target_dir.join("corpus").join(target);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let status = cargo_fuzz("run")
            .args(BUILD_FLAGS)
            .arg("--target-dir")
            .arg(&target_dir)
            .arg(target)
            // New inputs go to the first directory; the committed corpus
            // is only read.
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={share}"))
            .arg(format!("-timeout={PER_INPUT_SECONDS}"))
            .arg("-print_final_stats=1")
            .status()
            .with_context(|| format!("starting cargo fuzz run {target}"))?;
        if !status.success() {
            failed.push(target.as_str());
        }
    }
    let took = started.elapsed();
    if !failed.is_empty() {
        bail!(
            "fuzz: {} found a failing input (saved under fuzz/artifacts/<target>/; \
             `cargo fuzz run <target> <file>` replays it)",
            failed.join(", ")
        );
    }
    println!(
        "fuzz: {} targets, no failure, in {} s ({} s of it building)",
        targets.len(),
        took.as_secs(),
        built_in.as_secs()
    );
    Ok(())
}

/// Where the fuzz build goes: `fuzz/` under the target directory cargo
/// uses (`CARGO_TARGET_DIR`, else `target/`), beside the main build's
/// `debug/` and `release/`, whose cache its flags would otherwise throw
/// away.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("fuzz")
}
