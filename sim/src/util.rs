//! Small helpers shared by the simulator's modules: Go duration syntax (Consul speaks it
//! on the wire), stable hashing for content hashes and accessor IDs, and URL decoding.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a Go `time.ParseDuration` string into signed nanoseconds, with Go's error texts
/// (they reach clients in `Request decode failed: ...` bodies).
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(input));
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    // Go accumulates in uint64 nanoseconds and rejects overflow; u128 makes the
    // overflow check a plain comparison.
    let mut total: u128 = 0;
    while !s.is_empty() {
        let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (int_part, rest) = s.split_at(digits_end);
        s = rest;
        let mut frac_part = "";
        if let Some(rest) = s.strip_prefix('.') {
            let frac_end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            frac_part = &rest[..frac_end];
            s = &rest[frac_end..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_end = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        if unit.is_empty() {
            return Err(format!(
                "time: missing unit in duration {}",
                go_quote(input)
            ));
        }
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3600 * NANOS_PER_SEC,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(input)
                ))
            }
        };
        let int_value: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<u128>().map_err(|_| invalid())?
        };
        let mut value = int_value.checked_mul(unit_nanos).ok_or_else(invalid)?;
        if !frac_part.is_empty() {
            let mut scale = unit_nanos;
            for digit in frac_part.bytes().take(30) {
                scale /= 10;
                if scale == 0 {
                    break;
                }
                value += u128::from(digit - b'0') * scale;
            }
        }
        total = total.checked_add(value).ok_or_else(invalid)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return Err(invalid());
        }
    }
    let total = i128::try_from(total).map_err(|_| invalid())?;
    let signed = if negative { -total } else { total };
    i64::try_from(signed).map_err(|_| invalid())
}

/// Go's `Duration.String()` for non-negative durations ("10s", "1m30s", "1h0m0s", "500ms").
pub fn format_go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = u128::from(nanos.unsigned_abs());
    if u < NANOS_PER_SEC {
        let (unit, digits) = if u < 1_000 {
            ("ns", 0)
        } else if u < 1_000_000 {
            ("\u{b5}s", 3)
        } else {
            ("ms", 6)
        };
        return format!("{sign}{}{unit}", fixed_point(u, digits));
    }
    let secs = u / NANOS_PER_SEC;
    let frac = u % NANOS_PER_SEC;
    let hours = secs / 3600;
    let minutes = (secs / 60) % 60;
    let seconds = secs % 60;
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h{minutes}m"));
    } else if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&fixed_point(seconds * NANOS_PER_SEC + frac, 9));
    out.push('s');
    out
}

/// `value / 10^digits` printed with the trailing zeros of the fraction trimmed.
fn fixed_point(value: u128, digits: u32) -> String {
    let scale = 10u128.pow(digits);
    let int = value / scale;
    let frac = value % scale;
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Go's `%q` for the strings we quote: escapes `"` and `\` and control characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// FNV-1a, 64 bit: stable across runs (unlike `DefaultHasher`), so content hashes and
/// accessor IDs do not change between two calls.
pub fn fnv64(seed: u64, data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A UUID-shaped identifier derived from `input` (Consul's accessor and node IDs are UUIDs).
pub fn uuid_from(input: &str) -> String {
    let a = fnv64(0x5eed_0001, input.as_bytes());
    let b = fnv64(0x5eed_0002, input.as_bytes());
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random number in `0..bound` (0 when `bound` is 0). Only jitter needs randomness, so
/// the per-process random keys of `RandomState` are enough.
pub fn random_below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() % bound
}

/// Consul's `lib.RandomStagger(wait / 16)` added to a blocking wait.
pub fn jittered(wait: Duration) -> Duration {
    let extra = random_below((wait.as_nanos() / 16).min(u128::from(u64::MAX)) as u64);
    wait + Duration::from_nanos(extra)
}

/// Percent-decoding; `plus_is_space` for query strings (Go's `url.ParseQuery`).
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The query string as ordered (key, value) pairs, decoded.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(part, true), String::new()),
        })
        .collect()
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        let cases: &[(&str, Result<i64, &str>)] = &[
            ("10s", Ok(10_000_000_000)),
            ("5m", Ok(300_000_000_000)),
            ("300000ms", Ok(300_000_000_000)),
            ("1m30s", Ok(90_000_000_000)),
            ("1.5s", Ok(1_500_000_000)),
            ("0", Ok(0)),
            ("-1s", Ok(-1_000_000_000)),
            ("2h", Ok(7_200_000_000_000)),
            ("10us", Ok(10_000)),
            ("", Err("time: invalid duration \"\"")),
            ("abc", Err("time: invalid duration \"abc\"")),
            ("10", Err("time: missing unit in duration \"10\"")),
            ("10x", Err("time: unknown unit \"x\" in duration \"10x\"")),
            ("s", Err("time: invalid duration \"s\"")),
            ("9999999999h", Err("time: invalid duration \"9999999999h\"")),
        ];
        for (input, want) in cases {
            let got = parse_go_duration(input);
            assert_eq!(got, want.map_err(|e| e.to_string()), "input {input:?}");
        }
    }

    #[test]
    fn go_durations_format_like_go() {
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (600_000_000_000, "10m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500_000, "1.5ms"),
            (42, "42ns"),
        ];
        for (nanos, want) in cases {
            assert_eq!(format_go_duration(*nanos), *want, "nanos {nanos}");
        }
    }

    #[test]
    fn query_strings_decode_like_go() {
        let got = parse_query("filter=ServiceKind%20%3D%3D%20%22%22&index=5&stale&a=b+c");
        assert_eq!(
            got,
            vec![
                ("filter".to_string(), "ServiceKind == \"\"".to_string()),
                ("index".to_string(), "5".to_string()),
                ("stale".to_string(), String::new()),
                ("a".to_string(), "b c".to_string()),
            ]
        );
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%41%zz", false), "A%zz");
    }

    #[test]
    fn uuids_are_stable_and_shaped() {
        let a = uuid_from("secret");
        assert_eq!(a, uuid_from("secret"));
        assert_ne!(a, uuid_from("other"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    }
}
