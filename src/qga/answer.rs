//! The guest agent's answers, parsed without trusting them and without copying them: one line
//! of JSON as a typed value that borrows its base64 payload from the line, decoded straight
//! onto the output; an error the agent reported; or not an answer (an event, a blank). Pure
//! functions of the bytes (the fuzz target calls them); the connection is [`super::Agent`].

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{ExecResult, QgaError};

/// The JSON of an answer line: without surrounding whitespace and 0xFF bytes (the sync's
/// delimiter, or a reset an earlier client sent).
fn json_of(line: &[u8]) -> &[u8] {
    let junk = |b: &u8| b.is_ascii_whitespace() || *b == 0xff;
    let start = line.iter().position(|b| !junk(b)).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !junk(b)).map_or(start, |i| i + 1);
    &line[start..end]
}

/// An answer: `{"return": T}` or `{"error": {"class", "desc"}}`; anything else is an event.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Envelope<T> {
    /// Present (even `null`) or absent.
    #[serde(rename = "return", default, deserialize_with = "present")]
    ret: Option<T>,
    error: Option<Fault>,
}

fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Fault {
    #[serde(default)]
    class: Value,
    #[serde(default)]
    desc: Value,
}

/// One answer line as `T`, which may borrow from the line (a base64 payload is then never
/// copied): `Some(T)`, an error the agent reported, or `None` for a line that is not an answer
/// (an event, a blank). Messages quote at most a short, escaped excerpt of the line.
pub fn parse_answer_as<'a, T: Deserialize<'a>>(
    line: &'a [u8],
    command: &str,
) -> Result<Option<T>, QgaError> {
    let text = json_of(line);
    if text.is_empty() {
        return Ok(None);
    }
    let e: Envelope<T> = serde_json::from_slice(text).map_err(|e| {
        let what = if e.is_data() {
            "not an answer"
        } else {
            "not JSON"
        };
        QgaError::Protocol(format!(
            "{command}: {what} ({}): {}",
            crate::text::excerpt_of(&e, 120),
            crate::text::excerpt(text, 80)
        ))
    })?;
    if let Some(r) = e.ret {
        return Ok(Some(r));
    }
    if let Some(f) = e.error {
        let words = |v: &Value, max| crate::text::excerpt(v.as_str().unwrap_or("").as_bytes(), max);
        return Err(QgaError::Command {
            command: command.to_string(),
            class: words(&f.class, 80),
            desc: words(&f.desc, 400),
        });
    }
    Ok(None)
}

/// One answer line from an agent: `Some(return value)`, an error the agent reported, or `None`
/// for a line that is not an answer (an event, a blank). Never panics, whatever the guest sends.
pub fn parse_answer(line: &[u8], command: &str) -> Result<Option<Value>, QgaError> {
    parse_answer_as(line, command)
}

/// A JSON string borrowed from the answer line when it has no escapes (a base64 payload), so a
/// 40 MiB answer is not copied to be decoded.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// One `guest-file-read` answer: its bytes decoded onto `data` (at most `limit` in all), and
/// whether the file ended (`None`: not an answer). An agent that claims bytes it does not send
/// is a protocol error, not a loop.
pub fn file_chunk(line: &[u8], data: &mut Vec<u8>, limit: usize) -> Result<Option<bool>, QgaError> {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        count: Option<u64>,
        #[serde(rename = "buf-b64", borrow)]
        buf: Option<Text<'a>>,
        eof: Option<bool>,
    }
    let command = "guest-file-read";
    let Some(c) = parse_answer_as::<Chunk>(line, command)? else {
        return Ok(None);
    };
    let before = data.len();
    let too_large = || QgaError::Protocol(format!("the file is larger than {limit} bytes"));
    if let Some(Text(b)) = &c.buf {
        // Base64 of n characters holds at least n/4*3 - 2 bytes: refused before decoding.
        if (b.len() / 4 * 3).saturating_sub(2) > limit.saturating_sub(before) {
            return Err(too_large());
        }
        decode_into(b, data)?;
    }
    let got = data.len() - before;
    if data.len() > limit {
        return Err(too_large());
    }
    if let Some(n) = c.count
        && n != got as u64
    {
        return Err(QgaError::Protocol(format!(
            "{command}: the agent said it read {n} bytes and sent {got}"
        )));
    }
    Ok(Some(c.eof.unwrap_or(true) || got == 0))
}

/// What `guest-exec-status` said of a program.
#[derive(Debug)]
pub enum ExecState {
    Running,
    Exited(ExecResult),
}

/// One `guest-exec-status` answer, its output decoded straight from the answer line (`None`:
/// not an answer).
pub fn exec_status(line: &[u8]) -> Result<Option<ExecState>, QgaError> {
    #[derive(Deserialize)]
    struct Status<'a> {
        #[serde(default)]
        exited: bool,
        exitcode: Option<i64>,
        signal: Option<i64>,
        #[serde(rename = "out-data", borrow)]
        out: Option<Text<'a>>,
        #[serde(rename = "err-data", borrow)]
        err: Option<Text<'a>>,
        #[serde(rename = "out-truncated", default)]
        out_truncated: bool,
        #[serde(rename = "err-truncated", default)]
        err_truncated: bool,
    }
    let Some(s) = parse_answer_as::<Status>(line, "guest-exec-status")? else {
        return Ok(None);
    };
    if !s.exited {
        return Ok(Some(ExecState::Running));
    }
    let field = |t: &Option<Text>| -> Result<Vec<u8>, QgaError> {
        let mut out = Vec::new();
        if let Some(Text(b)) = t {
            decode_into(b, &mut out)?;
        }
        Ok(out)
    };
    Ok(Some(ExecState::Exited(ExecResult {
        exit_code: s.exitcode.and_then(|c| i32::try_from(c).ok()),
        signal: s.signal.and_then(|c| i32::try_from(c).ok()),
        stdout: field(&s.out)?,
        stderr: field(&s.err)?,
        truncated: s.out_truncated || s.err_truncated,
    })))
}

/// A `guest-file-read` or `guest-exec-status` payload, decoded.
pub fn decode(b: &str) -> Result<Vec<u8>, QgaError> {
    let mut out = Vec::new();
    decode_into(b, &mut out)?;
    Ok(out)
}

/// A payload decoded onto the end of `out` (no intermediate copy).
fn decode_into(b: &str, out: &mut Vec<u8>) -> Result<(), QgaError> {
    base64::engine::general_purpose::STANDARD
        .decode_vec(b, out)
        .map_err(|e| QgaError::Protocol(format!("bad base64 from the agent: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_uptime;

    #[test]
    fn uptime_is_a_plausible_number_or_nothing() {
        assert_eq!(parse_uptime(b"5012.30 9000.10\n"), Some(5012.3));
        for bad in [
            &b"-inf 0\n"[..],
            b"nan 0",
            b"inf 0",
            b"-1 0",
            b"1e300 0",
            b"",
            b"x y",
        ] {
            assert_eq!(
                parse_uptime(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn answers_are_parsed_without_trusting_them() {
        assert_eq!(
            parse_answer(b"{\"return\": 5}\n", "x").unwrap(),
            Some(serde_json::json!(5))
        );
        assert_eq!(parse_answer(b"\xff\n", "x").unwrap(), None);
        assert_eq!(parse_answer(b"{\"event\": \"x\"}", "x").unwrap(), None);
        assert!(matches!(
            parse_answer(b"{\"error\": {\"class\": \"C\", \"desc\": 7}}", "x"),
            Err(QgaError::Command { .. })
        ));
        assert!(matches!(
            parse_answer(b"{not json", "x"),
            Err(QgaError::Protocol(_))
        ));
    }

    #[test]
    fn file_chunks_are_decoded_and_checked_against_their_count() {
        let mut data = Vec::new();
        let chunk = |l: &str, d: &mut Vec<u8>| file_chunk(l.as_bytes(), d, 8);
        assert_eq!(
            chunk(
                r#"{"return": {"count": 2, "buf-b64": "aGk=", "eof": false}}"#,
                &mut data
            )
            .unwrap(),
            Some(false)
        );
        // An escaped `/` (a JSON writer may) is still base64.
        assert_eq!(
            chunk(
                r#"{"return": {"count": 3, "buf-b64": "P\/8/", "eof": true}}"#,
                &mut data
            )
            .unwrap(),
            Some(true)
        );
        assert_eq!(data, b"hi?\xff?");
        assert_eq!(chunk(r#"{"event": "x"}"#, &mut data).unwrap(), None);
        // Count 0 ends the file (eof or not); so does a missing eof.
        assert_eq!(
            chunk(r#"{"return": {"count": 0, "eof": false}}"#, &mut data).unwrap(),
            Some(true)
        );
        assert_eq!(
            chunk(r#"{"return": {"buf-b64": ""}}"#, &mut data).unwrap(),
            Some(true)
        );
        // Claimed bytes that are not sent, or more than sent: not a loop, an error.
        for bad in [
            r#"{"return": {"count": 1, "eof": false}}"#,
            r#"{"return": {"count": 9, "buf-b64": "aGk=", "eof": false}}"#,
            r#"{"return": {"count": "x", "buf-b64": 5}}"#,
            r#"{"return": {"count": 1, "buf-b64": "!!", "eof": false}}"#,
        ] {
            let e = file_chunk(bad.as_bytes(), &mut Vec::new(), 8).unwrap_err();
            assert!(matches!(e, QgaError::Protocol(_)), "{bad}: {e}");
        }
        // Past the limit, refused before decoding.
        let big = format!(
            r#"{{"return": {{"count": 12, "buf-b64": "{}"}}}}"#,
            "QUFB".repeat(4)
        );
        let e = file_chunk(big.as_bytes(), &mut Vec::new(), 8).unwrap_err();
        assert!(e.to_string().contains("larger than 8 bytes"), "{e}");
    }

    #[test]
    fn exec_status_is_decoded_from_the_line() {
        let run = exec_status(br#"{"return": {"exited": false}}"#).unwrap();
        assert!(matches!(run, Some(ExecState::Running)));
        let done = exec_status(
            br#"{"return": {"exited": true, "exitcode": 3, "out-data": "aGk=", "err-truncated": true}}"#,
        )
        .unwrap();
        let Some(ExecState::Exited(r)) = done else {
            panic!("{done:?}")
        };
        assert_eq!(
            (r.exit_code, r.signal, r.stdout.as_slice(), r.truncated),
            (Some(3), None, &b"hi"[..], true)
        );
        let odd = exec_status(br#"{"return": {"exited": true, "exitcode": 99999999999}}"#).unwrap();
        assert!(matches!(
            odd,
            Some(ExecState::Exited(ExecResult {
                exit_code: None,
                ..
            }))
        ));
    }

    #[test]
    fn messages_quote_a_short_excerpt_of_a_huge_answer() {
        let mut line = vec![b'\x01'; 8 << 20];
        line.push(b'\n');
        let e = parse_answer(&line, "guest-info").unwrap_err().to_string();
        assert!(e.len() < 600, "{} bytes", e.len());
        assert!(e.contains("8388608 bytes in all"), "{e}");
        assert!(!e.chars().any(char::is_control), "{e:?}");
        let big = format!(
            r#"{{"return": {{"count": "{}"}}}}"#,
            "\\u001b".repeat(1 << 20)
        );
        let e = file_chunk(big.as_bytes(), &mut Vec::new(), 8)
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600 && !e.chars().any(char::is_control), "{e:?}");
        let desc = format!(
            r#"{{"error": {{"class": "X", "desc": "{}"}}}}"#,
            "d".repeat(1 << 20)
        );
        let e = parse_answer(desc.as_bytes(), "guest-file-open")
            .unwrap_err()
            .to_string();
        assert!(e.len() < 600, "{} bytes", e.len());
    }
}
