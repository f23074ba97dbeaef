//! Numbers for people: the durations, sizes and counts that text output shows (`--json`
//! output keeps raw numbers, for scripts).

use std::time::Duration;

/// The two largest units: `350ms`, `2.5s`, `42s`, `4m 05s`, `3h 12m`, `2d 03h`.
pub(crate) fn duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 10_000 && ms % 1000 != 0 {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    let secs = duration.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours:02}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// [`duration`] of milliseconds, in one word for a table's column.
pub(crate) fn duration_cell(ms: u64) -> String {
    duration(Duration::from_millis(ms)).replace(' ', "")
}

/// `512 B`, `4.0 KiB`, `32.0 MiB`, `1.5 GiB`.
pub(crate) fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// [`bytes`] in one word for a table's column.
pub(crate) fn bytes_cell(count: u64) -> String {
    bytes(count).replace(' ', "")
}

/// `1 message`, `3 messages`.
pub(crate) fn count(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(350)), "350ms");
        assert_eq!(duration(ms(2500)), "2.5s");
        assert_eq!(duration(ms(3000)), "3s");
        assert_eq!(duration(ms(42_000)), "42s");
        assert_eq!(duration(ms(245_000)), "4m 05s");
        assert_eq!(duration(ms((3 * 3600 + 12 * 60 + 7) * 1000)), "3h 12m");
        assert_eq!(duration(ms((2 * 86_400 + 3 * 3600) * 1000)), "2d 03h");
        assert_eq!(duration_cell(245_000), "4m05s");
    }

    #[test]
    fn sizes_and_counts_read_as_people_say_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(4096), "4.0 KiB");
        assert_eq!(bytes(32 * 1024 * 1024), "32.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(bytes_cell(4096), "4.0KiB");
        assert_eq!(count(1, "message", "messages"), "1 message");
        assert_eq!(count(0, "message", "messages"), "0 messages");
    }
}
