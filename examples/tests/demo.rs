//! The demo the README runs: it must show an even spread and lose no call.

use std::process::Command;

#[test]
fn demo_shows_an_even_spread_and_loses_no_call() {
    let output = Command::new(env!("CARGO_BIN_EXE_demo"))
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": 10 calls").count(), 3, "uneven spread:\n{stdout}");
    assert!(stdout.contains(" ok, 0 failed"), "calls failed:\n{stdout}");
}
