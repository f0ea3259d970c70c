//! Sharding: job `i` (its 0-based line number) belongs to shard `i mod N`. The
//! engine does not distribute work; Slurm job arrays or Kubernetes Indexed Jobs
//! do, and [`Shard::from_env`] reads their variables.

use crate::error::Result;

/// This process's share of the jobs: those whose index ≡ `index` (mod `count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(crate::bad_input!(
                "shard {index}/{count}: need 0 <= I < N (shards are numbered from 0)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || crate::bad_input!("--shard `{s}`: expected I/N, e.g. 3/16");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let num = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
        Shard::new(num(i)?, num(n)?)
    }

    /// The shard from the flags and the scheduler's environment (`var` looks a name up):
    /// `--shard I/N` wins; `--shards N` pairs with Kubernetes' `JOB_COMPLETION_INDEX`;
    /// with neither, a Slurm array task is shard `(ID - MIN) / STEP` of
    /// `SLURM_ARRAY_TASK_COUNT`; otherwise every job is ours. Contradictions are errors,
    /// not guesses: a farm that silently ran every job in every task would redo the
    /// whole batch N times.
    pub fn from_env(
        shard: Option<&str>,
        shards: Option<usize>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    crate::bad_input!("{name}=`{v}`: expected a non-negative integer")
                }),
            }
        };
        match (shard, shards) {
            (Some(_), Some(_)) => Err(crate::bad_input!(
                "--shard I/N and --shards N: give one (--shards N takes I from JOB_COMPLETION_INDEX)"
            )),
            (Some(s), None) => Shard::parse(s),
            (None, Some(n)) => match num("JOB_COMPLETION_INDEX")? {
                Some(i) => Shard::new(i, n),
                None => Err(crate::bad_input!(
                    "--shards {n}: JOB_COMPLETION_INDEX is not set (run as a Kubernetes Indexed Job, or use --shard I/N)"
                )),
            },
            (None, None) => {
                if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
                    let count = num("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                        crate::bad_input!(
                            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not (use --shard I/N)"
                        )
                    })?;
                    let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                    let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
                    if id < min || (id - min) % step != 0 {
                        return Err(crate::bad_input!(
                            "SLURM_ARRAY_TASK_ID={id} is not in the array (min {min}, step {step})"
                        ));
                    }
                    Shard::new((id - min) / step, count)
                } else if var("JOB_COMPLETION_INDEX").is_some() {
                    Err(crate::bad_input!(
                        "JOB_COMPLETION_INDEX is set: pass --shards N (the Job's completions), or --shard I/N"
                    ))
                } else {
                    Ok(Shard::ALL)
                }
            }
        }
    }

    pub fn contains(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_come_from_flags_slurm_or_kubernetes() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert_eq!(Shard::from_env(None, None, none).unwrap(), Shard::ALL);
        assert_eq!(
            Shard::from_env(Some("3/16"), None, none).unwrap(),
            Shard::new(3, 16).unwrap()
        );
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]);
        assert_eq!(
            Shard::from_env(None, None, slurm).unwrap(),
            Shard::new(4, 8).unwrap()
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert_eq!(
            Shard::from_env(None, Some(4), k8s).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        for (shard, shards, var, wanted) in [
            (Some("4/4"), None, none, "0 <= I < N"),
            (Some("1/0"), None, none, "0 <= I < N"),
            (Some("x"), None, none, "expected I/N"),
            (Some("1/4"), Some(4), none, "give one"),
            (None, Some(4), none, "JOB_COMPLETION_INDEX is not set"),
            (None, None, k8s, "pass --shards N"),
            (None, Some(2), k8s, "0 <= I < N"),
        ] {
            let e = Shard::from_env(shard, shards, var).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(wanted), "{e}");
        }
        let e = Shard::from_env(None, None, env(&[("SLURM_ARRAY_TASK_ID", "1")])).unwrap_err();
        assert!(e.to_string().contains("SLURM_ARRAY_TASK_COUNT"), "{e}");
    }
}
