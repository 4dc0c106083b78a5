//! Ages as kubectl shows them (`5s`, `3m20s`, `2d4h`), computed the way upstream's table printers do.

/// A duration in seconds in upstream's short human form.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an RFC 3339 timestamp, `<unknown>` when absent or unparsable.
pub fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(crate::meta::parse_time) else {
        return "<unknown>".into();
    };
    let secs = jiff::Timestamp::now().as_second() - t.as_second();
    human_duration(secs)
}

#[cfg(test)]
mod tests {
    use super::human_duration as h;

    #[test]
    fn upstream_forms() {
        assert_eq!(h(5), "5s");
        assert_eq!(h(119), "119s");
        assert_eq!(h(200), "3m20s");
        assert_eq!(h(600), "10m");
        assert_eq!(h(3 * 3600 + 60), "3h1m");
        assert_eq!(h(20 * 3600), "20h");
        assert_eq!(h(3 * 86400 + 3600), "3d1h");
        assert_eq!(h(30 * 86400), "30d");
    }
}
