//! Python semantics for the template engine: `str()` of values, `json.dumps`, string methods
//! with Python's whitespace, and `strftime`.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, State, Value};

use crate::chat::strip::is_python_space;
use crate::chat::tool_calls::write_json_string;

/// Python's `str(value)`, as jinja2 prints `{{ value }}`: strings raw, `None`, `True`,
/// `False`, Python float reprs, and `repr` for lists and dicts.
pub(crate) fn python_str(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::String => out.push_str(value.as_str().unwrap_or_default()),
        _ => python_repr(value, out),
    }
}

/// Python's `repr(value)`.
pub(crate) fn python_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => push_number(value, out, false),
        ValueKind::String => repr_str(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = value.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(&item, out);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(iter) = value.try_iter() {
                for (i, key) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    python_repr(&key, out);
                    out.push_str(": ");
                    python_repr(&value.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// Python's `repr` of a string: single quotes unless the text holds one and no double quote.
fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// A number as Python prints it (`repr` of an int or a float); `json` spells the special
/// floats as `json.dumps` does.
fn push_number(value: &Value, out: &mut String, json: bool) {
    if value.is_integer() {
        if let Ok(i) = i128::try_from(value.clone()) {
            let _ = write!(out, "{i}");
            return;
        }
        if let Ok(u) = u128::try_from(value.clone()) {
            let _ = write!(out, "{u}");
            return;
        }
    }
    match f64::try_from(value.clone()) {
        Ok(f) => push_float(f, out, json),
        Err(_) => {
            let _ = write!(out, "{value}");
        }
    }
}

/// `repr(float)`: the shortest round-trip digits, positional for exponents -4..16, else
/// `1e+16` style; `nan`/`inf` (json: `NaN`/`Infinity`).
pub(crate) fn push_float(f: f64, out: &mut String, json: bool) {
    if f.is_nan() {
        out.push_str(if json { "NaN" } else { "nan" });
        return;
    }
    if f.is_infinite() {
        out.push_str(match (f > 0.0, json) {
            (true, true) => "Infinity",
            (false, true) => "-Infinity",
            (true, false) => "inf",
            (false, false) => "-inf",
        });
        return;
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

/// Options of Python's `json.dumps` that transformers' `tojson` passes on.
pub(crate) struct JsonStyle {
    /// `None`: one line; `Some(s)`: newlines, `s` per level.
    pub(crate) indent: Option<String>,
    pub(crate) item_sep: String,
    pub(crate) key_sep: String,
    pub(crate) ensure_ascii: bool,
    pub(crate) sort_keys: bool,
}

/// `json.dumps(value, ...)` with Python's rules.
pub(crate) fn json_dumps(value: &Value, style: &JsonStyle, out: &mut String) -> Result<(), Error> {
    json_value(value, style, 0, out)
}

fn json_newline(style: &JsonStyle, level: usize, out: &mut String) {
    if let Some(indent) = &style.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(indent);
        }
    }
}

fn json_value(
    value: &Value,
    style: &JsonStyle,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    if level > 500 {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "tojson: value nested too deeply",
        ));
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => push_number(value, out, true),
        ValueKind::String => {
            write_json_string(value.as_str().unwrap_or_default(), style.ensure_ascii, out)
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                json_newline(style, level + 1, out);
                json_value(item, style, level + 1, out)?;
            }
            json_newline(style, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let name = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
                    ValueKind::None => "null".to_owned(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).to_owned(),
                    ValueKind::Number => {
                        let mut s = String::new();
                        push_number(&key, &mut s, true);
                        s
                    }
                    other => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!(
                                "tojson: keys must be str, int, float, bool or None, not {other}"
                            ),
                        ))
                    }
                };
                entries.push((name, item));
            }
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (name, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(&style.item_sep);
                }
                json_newline(style, level + 1, out);
                write_json_string(name, style.ensure_ascii, out);
                out.push_str(&style.key_sep);
                json_value(item, style, level + 1, out)?;
            }
            json_newline(style, level, out);
            out.push('}');
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a value of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

/// transformers' `tojson` filter:
/// `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
/// (`sort_keys` as a keyword only).
pub(crate) fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    separators: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let pick = |positional: Option<Value>, name: &str| -> Result<Option<Value>, Error> {
        match kwargs.get::<Option<Value>>(name)? {
            Some(v) => Ok(Some(v)),
            None => Ok(positional),
        }
    };
    let ensure_ascii = pick(ensure_ascii, "ensure_ascii")?.is_some_and(|v| v.is_true());
    let sort_keys = pick(None, "sort_keys")?.is_some_and(|v| v.is_true());
    let indent = match pick(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let n = i64::try_from(v.clone()).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an int or a str",
                    )
                })?;
                Some(" ".repeat(usize::try_from(n).unwrap_or(0).min(64)))
            }
        },
    };
    let (item_sep, key_sep) = match pick(separators, "separators")? {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => (
                    a.as_str().unwrap_or_default().to_owned(),
                    b.as_str().unwrap_or_default().to_owned(),
                ),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ))
                }
            }
        }
        _ if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        _ => (", ".to_owned(), ": ".to_owned()),
    };
    kwargs.assert_all_used()?;
    let style = JsonStyle {
        indent,
        item_sep,
        key_sep,
        ensure_ascii,
        sort_keys,
    };
    let mut out = String::new();
    json_dumps(value, &style, &mut out)?;
    Ok(Value::from(out))
}

/// jinja2's `trim` filter: Python's `str.strip(chars)`.
pub(crate) fn trim_filter(value: &Value, chars: Option<Value>) -> Result<Value, Error> {
    let s = string_of(value);
    Ok(Value::from(py_strip(&s, chars.as_ref(), true, true)))
}

/// jinja2's `string` filter: Python's `str(value)`.
pub(crate) fn string_filter(value: &Value) -> Value {
    if value.kind() == ValueKind::String {
        return value.clone();
    }
    let mut out = String::new();
    python_str(value, &mut out);
    Value::from(out)
}

fn string_of(value: &Value) -> String {
    let mut out = String::new();
    python_str(value, &mut out);
    out
}

/// `str.strip`/`lstrip`/`rstrip` with Python's whitespace when `chars` is absent or None.
fn py_strip<'a>(s: &'a str, chars: Option<&Value>, left: bool, right: bool) -> &'a str {
    let set: Option<Vec<char>> = chars
        .filter(|c| !c.is_none() && !c.is_undefined())
        .map(|c| c.as_str().unwrap_or_default().chars().collect());
    let matches = |c: char| match &set {
        Some(set) => set.contains(&c),
        None => is_python_space(c),
    };
    let mut out = s;
    if left {
        out = out.trim_start_matches(matches);
    }
    if right {
        out = out.trim_end_matches(matches);
    }
    out
}

/// `str.split()` without a separator: runs of Python whitespace, at most `maxsplit` splits.
fn py_split_whitespace(s: &str, maxsplit: i64) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s.trim_start_matches(is_python_space);
    while !rest.is_empty() {
        if maxsplit >= 0 && out.len() as i64 == maxsplit {
            out.push(rest);
            break;
        }
        match rest.find(is_python_space) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = rest[i..].trim_start_matches(is_python_space);
            }
            None => {
                out.push(rest);
                break;
            }
        }
    }
    out
}

/// Python's line boundaries for `str.splitlines`.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{b}'
            | '\u{c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

fn py_splitlines(s: &str, keepends: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_break(c) {
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = iter.peek() {
                    end = j + 1;
                    iter.next();
                }
            }
            out.push(if keepends {
                &s[start..end]
            } else {
                &s[start..i]
            });
            start = end;
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Python methods on values (`"x".strip()`, `d.items()`, ...): minijinja-contrib's
/// `pycompat`, with the whitespace-sensitive string methods following Python's rules.
pub(crate) fn unknown_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        let arg = |i: usize| args.get(i);
        let too_many = |n: usize| {
            if args.len() > n {
                Err(Error::from(ErrorKind::TooManyArguments))
            } else {
                Ok(())
            }
        };
        match method {
            "strip" | "lstrip" | "rstrip" => {
                too_many(1)?;
                let (l, r) = match method {
                    "strip" => (true, true),
                    "lstrip" => (true, false),
                    _ => (false, true),
                };
                return Ok(Value::from(py_strip(s, arg(0), l, r)));
            }
            "isspace" => {
                too_many(0)?;
                return Ok(Value::from(!s.is_empty() && s.chars().all(is_python_space)));
            }
            "split" if arg(0).is_none_or(|v| v.is_none()) => {
                too_many(2)?;
                let maxsplit = match arg(1) {
                    Some(v) => i64::try_from(v.clone())?,
                    None => -1,
                };
                return Ok(py_split_whitespace(s, maxsplit)
                    .into_iter()
                    .map(Value::from)
                    .collect());
            }
            "splitlines" => {
                too_many(1)?;
                let keepends = arg(0).is_some_and(|v| v.is_true());
                return Ok(py_splitlines(s, keepends)
                    .into_iter()
                    .map(Value::from)
                    .collect());
            }
            _ => {}
        }
    }
    minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
}

/// Formats `time` (seconds since the Unix epoch, UTC) with C `strftime` codes: `%Y %m %d
/// %H %M %S %y %B %b %h %A %a %j %p %I %e %Z %z %%`, and glibc's `%-d`-style unpadded
/// forms. Unknown codes are kept as written.
pub(crate) fn strftime(fmt: &str, unix_seconds: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = (days + 3).rem_euclid(7) as usize;
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let Some(code) = chars.next() else {
            out.push('%');
            break;
        };
        let num = |out: &mut String, v: i64, width: usize| {
            if unpadded {
                let _ = write!(out, "{v}");
            } else {
                let _ = write!(out, "{v:0width$}");
            }
        };
        match code {
            'Y' => {
                let _ = write!(out, "{year}");
            }
            'y' => num(&mut out, year.rem_euclid(100), 2),
            'm' => num(&mut out, month, 2),
            'd' => num(&mut out, day, 2),
            'e' => {
                let _ = write!(out, "{day:>2}");
            }
            'H' => num(&mut out, hour, 2),
            'I' => num(&mut out, hour12, 2),
            'M' => num(&mut out, minute, 2),
            'S' => num(&mut out, second, 2),
            'j' => num(&mut out, yday, 3),
            'p' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'B' => out.push_str(MONTHS[(month - 1) as usize]),
            'b' | 'h' => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            'A' => out.push_str(DAYS[weekday]),
            'a' => out.push_str(&DAYS[weekday][..3]),
            'Z' => out.push_str("UTC"),
            'z' => out.push_str("+0000"),
            '%' => out.push('%'),
            other => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(v: Value) -> String {
        let mut s = String::new();
        python_str(&v, &mut s);
        s
    }

    #[test]
    fn template_python_str_of_values() {
        assert_eq!(repr(Value::from(())), "None");
        assert_eq!(repr(Value::from(true)), "True");
        assert_eq!(repr(Value::from(1.0f64)), "1.0");
        assert_eq!(repr(Value::from(0.1f64)), "0.1");
        assert_eq!(repr(Value::from(1e16f64)), "1e+16");
        assert_eq!(repr(Value::from(1.5e-5f64)), "1.5e-05");
        assert_eq!(repr(Value::from(0.0001f64)), "0.0001");
        assert_eq!(repr(Value::from(123456.789f64)), "123456.789");
        assert_eq!(repr(Value::from(-2.5f64)), "-2.5");
        assert_eq!(repr(Value::from(42)), "42");
        assert_eq!(
            repr(Value::from(vec![
                Value::from("it's"),
                Value::from("a"),
                Value::from(())
            ])),
            "[\"it's\", 'a', None]"
        );
    }

    #[test]
    fn template_python_split_and_splitlines() {
        assert_eq!(py_split_whitespace(" a \u{1c}b  c ", -1), ["a", "b", "c"]);
        assert_eq!(py_split_whitespace("a b  ", 1), ["a", "b  "]);
        assert_eq!(py_split_whitespace("   ", -1), Vec::<&str>::new());
        assert_eq!(py_splitlines("a\r\nb\u{2028}c\n", false), ["a", "b", "c"]);
        assert_eq!(py_splitlines("a\r\nb\n", true), ["a\r\n", "b\n"]);
        assert_eq!(py_splitlines("", false), Vec::<&str>::new());
    }

    #[test]
    fn template_strftime_codes() {
        // 2024-07-26 13:05:09 UTC, a Friday.
        let t = 1_721_999_109;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %-d, %H:%M:%S %p %j %y %%", t),
            "Friday July 26, 13:05:09 PM 208 24 %"
        );
        assert_eq!(strftime("%Y-%m-%d", 0), "1970-01-01");
        assert_eq!(strftime("%Y-%m-%d %a", 951_782_400), "2000-02-29 Tue");
        assert_eq!(strftime("%Q", 0), "%Q");
    }
}
