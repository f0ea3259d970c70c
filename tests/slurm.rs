//! examples/slurm/easel-array.sbatch under a real Slurm: examples/slurm/local-test.sh
//! starts slurmctld and slurmd on this machine (installing slurm-wlm and munge with
//! apt-get when they are missing), submits the script as a 4-task array over 16 jobs,
//! checks every PNG and manifest line, resubmits and checks that nothing is redone,
//! then stops the daemons it started.
//!
//! Only with EASEL_TEST_SLURM=1, which CI sets when it runs as root: the script needs
//! root and changes the machine (packages). About 30 s with the packages' install.

use std::process::Command;

#[test]
fn the_array_script_runs_under_a_one_machine_slurm() {
    if std::env::var_os("EASEL_TEST_SLURM").is_none_or(|v| v != "1") {
        eprintln!("skipped: set EASEL_TEST_SLURM=1 (as root) to run examples/slurm/local-test.sh");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/slurm/local-test.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("EASEL", env!("CARGO_BIN_EXE_easel"))
        .env_remove("EASEL_MODEL")
        .env_remove("EASEL_ARGS")
        .env_remove("SLURM_CONF")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("local-test: ok in"), "{stdout}\n{stderr}");
}
