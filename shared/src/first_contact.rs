//! Find-or-create of a customer's contact, for a send to a new phone number (API). An inbound
//! message from a new customer (webhook) builds the contact with [`new_contact`] and creates
//! it in the message's own write instead (see `InboundWrite::new_contact`).
//!
//! Contract: a consistent match by identity (phone first, then user id); when none, a new
//! contact holding the identity, created with conditional writes on its identity records so
//! two concurrent first contacts end with one contact (the loser sees `Conflict` and matches
//! again). Gives up after a few rounds rather than loop against a store that keeps refusing.

use chrono::{DateTime, Utc};

use crate::contact::{Contact, ValidContact};
use crate::store::{ContactStore, CustomerIdentity, IdentityKey, StoreError};

/// Rounds of match-then-create before giving up.
const ATTEMPTS: usize = 3;

/// The customer's contact and the identity it is matched by.
#[derive(Debug, Clone, PartialEq)]
pub enum FoundContact {
    /// An existing contact (only its id was read).
    Existing {
        contact_id: String,
        matched_by: IdentityKey,
    },
    /// Created just now, matched from then on by the customer's primary identity.
    Created {
        contact: Box<Contact>,
        matched_by: IdentityKey,
    },
}

impl FoundContact {
    pub fn contact_id(&self) -> &str {
        match self {
            FoundContact::Existing { contact_id, .. } => contact_id,
            FoundContact::Created { contact, .. } => &contact.contact_id,
        }
    }

    pub fn matched_by(&self) -> &IdentityKey {
        match self {
            FoundContact::Existing { matched_by, .. } | FoundContact::Created { matched_by, .. } => matched_by,
        }
    }
}

/// The contact holding `identity`, created (with `profile_name` as its name and WhatsApp
/// profile name) when there is none.
pub async fn find_or_create_contact<S: ContactStore>(
    store: &S,
    tenant_id: &str,
    identity: &CustomerIdentity,
    profile_name: Option<&str>,
    now: DateTime<Utc>,
) -> Result<FoundContact, StoreError> {
    if let Some((contact_id, matched_by)) = store.match_contact(tenant_id, identity).await? {
        return Ok(FoundContact::Existing { contact_id, matched_by });
    }
    create_or_match_contact(store, tenant_id, identity, profile_name, now).await
}

/// [`find_or_create_contact`] for a caller that has just matched the identity and found no
/// contact (and decided one may be created): creates it, matching again only after a
/// conflicting concurrent creation.
pub async fn create_or_match_contact<S: ContactStore>(
    store: &S,
    tenant_id: &str,
    identity: &CustomerIdentity,
    profile_name: Option<&str>,
    now: DateTime<Utc>,
) -> Result<FoundContact, StoreError> {
    let Some(primary) = identity.primary_key() else {
        return Err(StoreError::Backend(
            "a customer without phone or user id has no contact".into(),
        ));
    };
    for attempt in 0..ATTEMPTS {
        if attempt > 0
            && let Some((contact_id, matched_by)) = store.match_contact(tenant_id, identity).await?
        {
            return Ok(FoundContact::Existing { contact_id, matched_by });
        }
        let contact = new_contact(tenant_id, identity, profile_name, now);
        match store.create_contact(&contact).await {
            Ok(()) => {
                return Ok(FoundContact::Created {
                    contact: Box::new(contact),
                    matched_by: primary,
                });
            }
            // Another first contact created it concurrently: match again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend("contact could not be resolved".into()))
}

/// A customer's new contact, not yet stored: a fresh id, the identity, and `profile_name` as
/// its name and WhatsApp profile name.
pub fn new_contact(
    tenant_id: &str,
    identity: &CustomerIdentity,
    profile_name: Option<&str>,
    now: DateTime<Utc>,
) -> Contact {
    let valid = ValidContact {
        phone: identity.phone.clone(),
        user_id: identity.user_id.clone(),
        name: profile_name.map(str::to_owned),
        email: None,
        language: None,
        tags: Vec::new(),
        attributes: Default::default(),
    };
    let mut contact = Contact::new(tenant_id, valid, now);
    contact.profile_name = profile_name.map(str::to_owned);
    contact
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::contact::{ConsentChange, RestrictionChange};
    use crate::cursor::Position;
    use crate::store::{ContactFilter, ContactUpdate, Page};

    /// Identity matches and contact creations only: `creates` answers each `create_contact`
    /// in turn (`true`: created, `false`: conflict), and a conflict makes `after_conflict`
    /// the match from then on.
    struct Identities {
        matched: Mutex<Option<(String, IdentityKey)>>,
        after_conflict: Option<(String, IdentityKey)>,
        creates: Mutex<Vec<bool>>,
        created: Mutex<Vec<Contact>>,
    }

    impl Identities {
        fn new(matched: Option<(&str, IdentityKey)>, creates: &[bool]) -> Self {
            Identities {
                matched: Mutex::new(matched.map(|(id, key)| (id.to_owned(), key))),
                after_conflict: None,
                creates: Mutex::new(creates.iter().rev().copied().collect()),
                created: Mutex::default(),
            }
        }
    }

    impl ContactStore for Identities {
        async fn match_contact(
            &self,
            _tenant_id: &str,
            _identity: &CustomerIdentity,
        ) -> Result<Option<(String, IdentityKey)>, StoreError> {
            Ok(self.matched.lock().unwrap().clone())
        }
        async fn create_contact(&self, contact: &Contact) -> Result<(), StoreError> {
            if self.creates.lock().unwrap().pop().expect("no more creates expected") {
                self.created.lock().unwrap().push(contact.clone());
                Ok(())
            } else {
                *self.matched.lock().unwrap() = self.after_conflict.clone();
                Err(StoreError::Conflict("identity taken".into()))
            }
        }
        async fn get_contact(&self, _: &str, _: &str) -> Result<Option<Contact>, StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn update_contact(&self, _: &ContactUpdate<'_>) -> Result<(), StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn record_consent(&self, _: &Contact, _: &Contact, _: &ConsentChange) -> Result<(), StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn record_restriction(&self, _: &Contact, _: &Contact, _: &RestrictionChange) -> Result<(), StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn consent_history(&self, _: &str, _: &str) -> Result<Vec<ConsentChange>, StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn restriction_history(&self, _: &str, _: &str) -> Result<Vec<RestrictionChange>, StoreError> {
            unreachable!("not used by find-or-create")
        }
        async fn list_contacts(
            &self,
            _: &str,
            _: &ContactFilter,
            _: i32,
            _: Option<Position>,
        ) -> Result<Page<Contact>, StoreError> {
            unreachable!("not used by find-or-create")
        }
    }

    fn customer() -> CustomerIdentity {
        CustomerIdentity {
            phone: Some("+447911123456".into()),
            user_id: Some("US.123".into()),
        }
    }

    fn run(store: &Identities, identity: &CustomerIdentity, name: Option<&str>) -> Result<FoundContact, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(find_or_create_contact(store, "t1", identity, name, Utc::now()))
    }

    #[test]
    fn an_existing_contact_is_matched_and_nothing_is_created() {
        let key = IdentityKey::UserId("US.123".into());
        let store = Identities::new(Some(("c1", key.clone())), &[]);
        let found = run(&store, &customer(), Some("Ann")).unwrap();
        assert_eq!((found.contact_id(), found.matched_by()), ("c1", &key));
        assert!(store.created.lock().unwrap().is_empty());
    }

    #[test]
    fn a_new_customer_gets_a_contact_named_by_the_profile_and_matched_by_phone() {
        let store = Identities::new(None, &[true]);
        let FoundContact::Created { contact, matched_by } = run(&store, &customer(), Some("Ann")).unwrap() else {
            panic!("expected a new contact");
        };
        assert_eq!(matched_by, IdentityKey::Phone("+447911123456".into()));
        assert_eq!(
            (contact.tenant_id.as_str(), contact.name.as_deref()),
            ("t1", Some("Ann"))
        );
        assert_eq!(contact.profile_name.as_deref(), Some("Ann"));
        assert_eq!(contact.user_id.as_deref(), Some("US.123"));
        assert_eq!(store.created.lock().unwrap().as_slice(), [*contact]);
    }

    #[test]
    fn a_lost_creation_race_matches_the_winner() {
        let mut store = Identities::new(None, &[false]);
        store.after_conflict = Some(("winner".into(), IdentityKey::Phone("+447911123456".into())));
        let found = run(&store, &customer(), None).unwrap();
        assert!(matches!(found, FoundContact::Existing { ref contact_id, .. } if contact_id == "winner"));
    }

    #[test]
    fn it_gives_up_after_repeated_conflicts_and_without_an_identity() {
        let store = Identities::new(None, &[false, false, false]);
        assert!(matches!(run(&store, &customer(), None), Err(StoreError::Backend(_))));
        assert!(store.creates.lock().unwrap().is_empty(), "three rounds");
        let nobody = CustomerIdentity {
            phone: None,
            user_id: None,
        };
        assert!(matches!(
            run(&Identities::new(None, &[]), &nobody, None),
            Err(StoreError::Backend(_))
        ));
    }
}
