//! Event time: the minute a heartbeat reports, and the host's clock.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A minute of event time, in minutes since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(pub u32);

impl Minute {
    /// The minute a point in time falls in.
    pub fn of(t: OffsetDateTime) -> Minute {
        Minute(t.unix_timestamp().div_euclid(60).clamp(0, u32::MAX as i64) as u32)
    }

    /// The minute a host-clock time in unix milliseconds falls in.
    pub fn of_ms(ms: i64) -> Minute {
        Minute((ms.max(0) / 60_000).min(u32::MAX as i64) as u32)
    }
}

/// The time a heartbeat reports, RFC 3339 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTime(pub OffsetDateTime);

impl EventTime {
    /// Unix milliseconds.
    pub fn unix_ms(&self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }
}

impl<'de> Deserialize<'de> for EventTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OffsetDateTime::parse(&s, &Rfc3339)
            .map(EventTime)
            .map_err(|e| de::Error::custom(format!("`{}` is not an RFC 3339 time: {e}", super::cut(s.clone(), 64))))
    }
}

impl Serialize for EventTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

/// Milliseconds since the Unix epoch, by the host's clock.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
