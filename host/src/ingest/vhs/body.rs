//! Reading a VHS body as a stream: gunzip, count and parse as it arrives, so memory grows with the parsed ids, not with copies of the body
//! (a ten-million-viewer channel is some 200 MB of JSON).

use std::io::{self, BufRead, BufReader, Read};

use flate2::read::GzDecoder;

use crate::domain::Heartbeat;
use crate::http::json_field;

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

impl BodyError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> BodyError {
        BodyError::Invalid { field: field.into(), message: message.into() }
    }
}

/// Counts bytes and fails past a limit.
struct Limited<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.exceeded = true;
            return Err(io::Error::other("body too large"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Parses a body holding one heartbeat or an array of them.
///
/// Blocking: run it off the async executor. `limit` bounds both the bytes
/// received and the bytes after decompression.
pub fn parse(raw: impl Read, gzip: bool, limit: u64) -> Result<Vec<Heartbeat>, BodyError> {
    let mut received = Limited { inner: raw, remaining: limit, exceeded: false };
    let result = if gzip {
        let mut inflated = Limited { inner: GzDecoder::new(&mut received), remaining: limit, exceeded: false };
        let result = parse_json(&mut inflated);
        if inflated.exceeded {
            drop(inflated);
            drain(&mut received.inner);
            return Err(BodyError::TooLarge { limit });
        }
        result
    } else {
        parse_json(&mut received)
    };
    if received.exceeded {
        drain(&mut received.inner);
        return Err(BodyError::TooLarge { limit });
    }
    let heartbeats = result?;
    // Read to the end, so trailing bytes past the limit are refused too.
    io::copy(&mut received, &mut io::sink()).map_err(|e| read_error(&e, received.exceeded, limit))?;
    Ok(heartbeats)
}

/// How much of an oversized body is read and discarded before answering 413:
/// a sender still writing when the connection closes sees a broken pipe, not
/// the answer. Beyond this the connection is dropped.
pub const DRAIN_BYTES: u64 = 1 << 20;

fn drain(reader: &mut impl Read) {
    let _ = io::copy(&mut reader.take(DRAIN_BYTES), &mut io::sink());
}

fn read_error(e: &io::Error, exceeded: bool, limit: u64) -> BodyError {
    if exceeded {
        BodyError::TooLarge { limit }
    } else {
        BodyError::invalid("", format!("the body could not be read: {e}"))
    }
}

fn parse_json(reader: impl Read) -> Result<Vec<Heartbeat>, BodyError> {
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let first = loop {
        let buf = reader.fill_buf().map_err(|e| BodyError::invalid("", format!("the body could not be read: {e}")))?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => break buf[i],
            None if buf.is_empty() => return Err(BodyError::invalid("", "the body is empty")),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let heartbeats = if first == b'[' {
        serde_path_to_error::deserialize::<_, Vec<Heartbeat>>(&mut de).map_err(json_error)?
    } else if first == b'{' {
        vec![serde_path_to_error::deserialize::<_, Heartbeat>(&mut de).map_err(json_error)?]
    } else {
        return Err(BodyError::invalid("", "expected a JSON object or an array of objects"));
    };
    de.end().map_err(|e| BodyError::invalid("", format!("trailing data after the JSON value: {e}")))?;
    Ok(heartbeats)
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> BodyError {
    let field = json_field(&err);
    let inner = err.into_inner();
    let message = inner.to_string();
    if inner.is_io() {
        return BodyError::invalid("", format!("the body could not be read: {message}"));
    }
    BodyError::Invalid { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const HB: &str = r#"{"broadcaster":"b","viewer_list":["v"],"game":"G","id":"i","time":"2026-11-23T15:04:05Z"}"#;

    fn field_of(body: &str) -> String {
        match parse(body.as_bytes(), false, 1 << 20) {
            Err(BodyError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_or_many() {
        assert_eq!(parse(HB.as_bytes(), false, 1 << 20).unwrap().len(), 1);
        assert_eq!(parse(format!(" [{HB},{HB}] ").as_bytes(), false, 1 << 20).unwrap().len(), 2);
    }

    #[test]
    fn errors_name_fields() {
        assert_eq!(field_of(&HB.replace(r#""id":"i","#, "")), "id");
        assert_eq!(field_of(&format!("[{HB},{}]", HB.replace(r#""game":"G""#, r#""game":1"#))), "[1].game");
        assert_eq!(field_of("{\"broadcaster\": "), "broadcaster");
        assert_eq!(field_of("nope"), "");
        assert_eq!(field_of(&format!("{HB} x")), "");
        assert_eq!(field_of(""), "");
    }

    #[test]
    fn size_is_bounded_before_and_after_gzip() {
        assert!(matches!(parse(HB.as_bytes(), false, 10), Err(BodyError::TooLarge { .. })));
        let big = format!("[{}]", vec![HB; 100].join(","));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(big.as_bytes()).unwrap();
        let packed = gz.finish().unwrap();
        assert!(packed.len() < 1000);
        assert_eq!(parse(&packed[..], true, 1 << 20).unwrap().len(), 100);
        assert!(matches!(parse(&packed[..], true, 1000), Err(BodyError::TooLarge { .. })));
    }

    mod properties {
        use super::*;
        use crate::test_values::{hostile_string, json_value};
        use proptest::prelude::*;

        const FIELDS: [&str; 9] =
            ["id", "broadcaster", "broadcast_id", "viewers", "viewer_list", "game", "version", "time", "retries"];

        /// A heartbeat with any field replaced by any value (or removed).
        fn tampered() -> impl Strategy<Value = (String, serde_json::Value)> {
            (prop::sample::select(FIELDS.to_vec()), prop::option::of(json_value())).prop_map(|(field, value)| {
                let mut hb: serde_json::Value = serde_json::from_str(HB).unwrap();
                match value {
                    Some(v) => hb[field] = v,
                    None => {
                        hb.as_object_mut().unwrap().remove(field);
                    }
                }
                (field.to_string(), hb)
            })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), gzip in any::<bool>()) {
                let _ = parse(&bytes[..], gzip, 1 << 16);
            }

            #[test]
            fn arbitrary_json_never_panics(value in json_value()) {
                let _ = parse(value.to_string().as_bytes(), false, 1 << 20);
            }

            #[test]
            fn a_bad_field_is_named((field, hb) in tampered(), batch in any::<bool>()) {
                let body = if batch { format!("[{HB},{hb}]") } else { hb.to_string() };
                match parse(body.as_bytes(), false, 1 << 20) {
                    Ok(_) => {}
                    Err(BodyError::Invalid { field: named, message }) => {
                        prop_assert!(!message.is_empty());
                        let want = if batch { format!("[1].{field}") } else { field.clone() };
                        prop_assert!(named.starts_with(&want), "named `{}` for a bad `{}`: {}", named, want, message);
                    }
                    Err(other) => prop_assert!(false, "{other:?}"),
                }
            }

            #[test]
            fn hostile_viewer_ids_are_taken_or_named(id in hostile_string()) {
                let body = HB.replace(r#"["v"]"#, &serde_json::json!(["ok", id]).to_string());
                match parse(body.as_bytes(), false, 1 << 20) {
                    Ok(hbs) => prop_assert_eq!(hbs[0].viewer_list.get(1), Some(id.as_str())),
                    Err(BodyError::Invalid { field, .. }) => prop_assert_eq!(field, "viewer_list[1]"),
                    Err(other) => prop_assert!(false, "{other:?}"),
                }
            }
        }
    }
}
