//! Human units in config files and flags: sizes (`64MiB`, `5GB`, `1.5GiB`, `4096`), rates
//! (`16MiB/s`) and durations (`3s`, `10m`, `1h 30m`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a size: write a number with an optional unit such as 512KiB, 64MiB or 5GB")]
pub struct SizeError(String);

/// A number of bytes. Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB,
/// MiB, GiB, TiB) powers of 1024; `K`, `M`, `G`, `T` alone are binary, as in `ulimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SizeError(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit {
            "" | "B" | "b" => 1,
            "k" | "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "K" | "KiB" | "Ki" => 1 << 10,
            "M" | "MiB" | "Mi" => 1 << 20,
            "G" | "GiB" | "Gi" => 1 << 30,
            "T" | "TiB" | "Ti" => 1 << 40,
            _ => return Err(err()),
        };
        if num.is_empty() {
            return Err(err());
        }
        if let Ok(n) = num.parse::<u64>() {
            return n.checked_mul(mult).map(ByteSize).ok_or_else(err);
        }
        let f: f64 = num.parse().map_err(|_| err())?;
        let v = f * mult as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(v.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}B")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrString::deserialize(d)? {
            NumberOrString::N(n) => Ok(ByteSize(n)),
            NumberOrString::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Bytes per second; `0` means unlimited. Written as a size with an optional `/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteRate(pub u64);

impl ByteRate {
    pub fn per_second(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }
}

impl FromStr for ByteRate {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_suffix("/s").unwrap_or(t);
        t.parse::<ByteSize>()
            .map(|b| ByteRate(b.0))
            .map_err(|_| SizeError(s.to_owned()))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", ByteSize(self.0))
    }
}

impl Serialize for ByteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrString::deserialize(d)? {
            NumberOrString::N(n) => Ok(ByteRate(n)),
            NumberOrString::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    N(u64),
    S(String),
}

/// A duration written the human way; use with `#[serde(with = "shoal_core::units::duration")]`.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("{s:?} is not a duration such as 3s, 500ms or 10m: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, n) in [
            ("0", 0),
            ("4096", 4096),
            ("512KiB", 512 << 10),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("5GB", 5_000_000_000),
            ("1.5GiB", 3 << 29),
            ("10G", 10 << 30),
            ("2kB", 2000),
        ] {
            assert_eq!(s.parse::<ByteSize>(), Ok(ByteSize(n)), "{s}");
        }
        for bad in ["", "MiB", "-1", "5 parsecs", "1e3", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize::mib(64).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn rates_and_serde() {
        assert_eq!("16MiB/s".parse::<ByteRate>(), Ok(ByteRate(16 << 20)));
        assert_eq!("0".parse::<ByteRate>().unwrap().per_second(), None);
        #[derive(Deserialize)]
        struct C {
            a: ByteSize,
            b: ByteSize,
            r: ByteRate,
            #[serde(with = "duration")]
            t: Duration,
        }
        let c: C = toml::from_str("a = 1024\nb = \"2MiB\"\nr = \"1MB/s\"\nt = \"1m 30s\"").unwrap();
        assert_eq!((c.a.0, c.b.0, c.r.0), (1024, 2 << 20, 1_000_000));
        assert_eq!(c.t, Duration::from_secs(90));
        assert!(toml::from_str::<C>("a = \"big\"\nb=1\nr=1\nt=\"1s\"").is_err());
    }
}
