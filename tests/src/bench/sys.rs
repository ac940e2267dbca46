//! What `/proc` says about the machine and about processes: the figures a benchmark needs to
//! say whether the machine or the design limited it.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

/// The machine the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_bytes: u64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_bytes: kib_field(&meminfo, "MemTotal:").unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cores": self.cores,
            "cpu_model": self.cpu_model,
            "mem_total_bytes": self.mem_total_bytes,
            "kernel": self.kernel,
        })
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cores ({}), {:.1} GiB memory, Linux {}",
            self.cores,
            self.cpu_model,
            self.mem_total_bytes as f64 / (1u64 << 30) as f64,
            self.kernel
        )
    }
}

/// A `/proc/*/status` or `/proc/meminfo` field in kB, as bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|k| k * 1024)
}

/// Clock ticks per second of `/proc` CPU times.
fn ticks_per_sec() -> f64 {
    static T: OnceLock<f64> = OnceLock::new();
    *T.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system) a process has used so far; `pid` `None` is this process.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let f = crate::process::stat_fields(pid.unwrap_or_else(std::process::id))?;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_sec())
}

/// Peak and current resident memory of a process, in bytes.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((kib_field(&status, "VmHWM:")?, kib_field(&status, "VmRSS:")?))
}

/// The whole machine's CPU time, busy and in all, in seconds (all cores together).
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    pub busy: f64,
    pub total: f64,
}

impl MachineCpu {
    pub fn read() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: f64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
        let t = ticks_per_sec();
        MachineCpu {
            busy: (total - idle) / t,
            total: total / t,
        }
    }

    /// The share of the machine's CPU that was busy between `self` and `later`.
    pub fn busy_share(&self, later: &MachineCpu) -> f64 {
        let total = later.total - self.total;
        if total <= 0.0 {
            0.0
        } else {
            (later.busy - self.busy) / total
        }
    }
}

/// CPU seconds by role (and `bench` for this program) at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    pub by_role: BTreeMap<String, f64>,
    pub machine: MachineCpu,
}

impl CpuSnapshot {
    /// Of the processes given as (role, pid), and this one.
    pub fn take<'a>(processes: impl IntoIterator<Item = (&'a str, u32)>) -> CpuSnapshot {
        let mut by_role = BTreeMap::new();
        for (role, pid) in processes {
            if let Some(s) = cpu_seconds(Some(pid)) {
                *by_role.entry(role.to_owned()).or_insert(0.0) += s;
            }
        }
        if let Some(s) = cpu_seconds(None) {
            by_role.insert("bench".into(), s);
        }
        CpuSnapshot {
            by_role,
            machine: MachineCpu::read(),
        }
    }

    /// CPU seconds used by each role between `self` and `later`, and the machine's busy share.
    pub fn since(&self, later: &CpuSnapshot) -> (BTreeMap<String, f64>, f64) {
        let used = later
            .by_role
            .iter()
            .map(|(k, v)| (k.clone(), v - self.by_role.get(k).copied().unwrap_or(0.0)))
            .collect();
        (used, self.machine.busy_share(&later.machine))
    }
}

/// The 1-minute load average: how busy other work kept the machine.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_memory() {
        assert!(cpu_seconds(None).is_some_and(|s| s >= 0.0));
        let (peak, now) = memory(std::process::id()).unwrap();
        assert!(peak >= now && now > 0);
    }

    #[test]
    fn kib_fields_are_bytes() {
        assert_eq!(kib_field("VmHWM:\t  1024 kB\n", "VmHWM:"), Some(1 << 20));
        assert_eq!(kib_field("VmRSS: 1 kB\n", "VmHWM:"), None);
    }
}
