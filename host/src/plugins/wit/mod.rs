//! The rules interface as this host speaks it. One module per interface
//! version, in the manner of Zed's `wasm_host/wit`: when the interface
//! changes, a new `since_vX_Y_Z` module binds it beside the old one.

mod since_v0_4_0;

pub use since_v0_4_0::*;

impl Entitlement {
    /// An entitlement as a rule is given it, for the viewer's linked `account`.
    pub fn of(e: &crate::domain::Entitlement, account: &str) -> Entitlement {
        Entitlement {
            id: e.entitlement_id.clone(),
            benefit_id: e.benefit_id.clone(),
            campaign_id: e.campaign_id.clone(),
            category_id: e.category_id.clone(),
            user_id: e.user_id.clone(),
            user_login: e.user_login.clone(),
            created_at: e.created_at_secs(),
            account: account.to_string(),
        }
    }
}

impl Viewers {
    /// Viewers as the interface passes them, from each one's (minutes, counted).
    pub fn from_progress(viewers: impl Iterator<Item = (u32, bool)>) -> Viewers {
        let len = viewers.size_hint().0;
        let mut flat = Viewers { minutes: Vec::with_capacity(len), counted: Vec::with_capacity(len.div_ceil(32)) };
        for (i, (minutes, counted)) in viewers.enumerate() {
            flat.minutes.push(minutes);
            if i % 32 == 0 {
                flat.counted.push(0);
            }
            if counted {
                flat.counted[i / 32] |= 1 << (i % 32);
            }
        }
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_viewers_are_bits_of_whole_words() {
        let flat = Viewers::from_progress((0..33).map(|i| (i, i % 16 == 0)));
        assert_eq!(flat.minutes.len(), 33);
        assert_eq!(flat.counted, vec![1 | 1 << 16, 1]);
    }
}
