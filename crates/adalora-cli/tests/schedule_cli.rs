//! `adalora schedule` end to end: CSV shape and values, plot, and invalid settings.

use std::process::Command;

fn adalora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_adalora"))
        .args(args)
        .output()
        .expect("run adalora")
}

#[test]
fn schedule_prints_the_reference_budgets() {
    let out = adalora(&[
        "schedule",
        "--init-r",
        "12",
        "--target-r",
        "8",
        "--matrices",
        "3",
        "--tinit",
        "5",
        "--tfinal",
        "5",
        "--total-step",
        "40",
        "--delta-t",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "step,budget,mask");
    assert_eq!(lines.len(), 41, "one row per step 0..T-1");
    let rows: Vec<(usize, usize, u8)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    // Warm-up: full budget, no mask.
    assert!(rows[..=5].iter().all(|&(_, b, m)| b == 36 && m == 0));
    // First budget step truncates: int(24 + 12·(1 − 1/30)³) = 34.
    assert_eq!(rows[6], (6, 34, 1));
    assert_eq!(rows[7].2, 0, "7 % 3 != 0: no mask");
    // Forced final mask at T − tfinal = 35 (35 % 3 != 0) and every final step after it.
    assert!(rows[35..].iter().all(|&(_, b, m)| b == 24 && m == 1));
    assert!(
        rows.windows(2).all(|w| w[1].1 <= w[0].1),
        "budget never grows"
    );
}

#[test]
fn schedule_plot_and_invalid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("b.png");
    let out = adalora(&[
        "schedule",
        "--init-r",
        "3",
        "--target-r",
        "1",
        "--matrices",
        "72",
        "--tinit",
        "8000",
        "--tfinal",
        "50000",
        "--total-step",
        "85904",
        "--delta-t",
        "100",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);

    let bad = adalora(&[
        "schedule",
        "--init-r",
        "12",
        "--target-r",
        "8",
        "--matrices",
        "3",
        "--tinit",
        "20",
        "--tfinal",
        "20",
        "--total-step",
        "40",
        "--delta-t",
        "1",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("total_step = 40") && err.contains("tinit + tfinal"),
        "{err}"
    );
    let bad = adalora(&[
        "schedule",
        "--init-r",
        "4",
        "--target-r",
        "8",
        "--matrices",
        "3",
        "--tinit",
        "1",
        "--tfinal",
        "1",
        "--total-step",
        "40",
        "--delta-t",
        "0",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("error: invalid setting"));
}
