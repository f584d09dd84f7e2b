//! [`UserStore`] and [`ConversationStore`] for [`MemStore`], mirroring `store/users.rs` and
//! `store/conversations.rs`: the same conditions (user as read, assignee as expected, marks
//! forward only), the same listing orders and filters, and the conversation changes a message
//! makes, applied with the pure rules of [`crate::conversation`] the update expressions mirror.

use chrono::{DateTime, Utc};

use super::{Key, MemStore, Op, State, key, page_of};
use crate::contact::ContactSummary;
use crate::conversation::{Conversation, ConversationStatus, InboxSort, Note, StatusChange, conversation_id};
use crate::cursor::Position;
use crate::message::{Direction, MessageRecord};
use crate::store::keys::inbox_sk;
use crate::store::{AssignOutcome, ConversationStore, InboxEntry, InboxQuery, Page, StoreError, UserStore, WalkPage};
use crate::tenant::{ApiKeyRecord, TenantStatus};
use crate::user::{User, UserStatus};

/// The conversation change of a message stored in the same "transaction" (`ConversationTouch`).
pub(super) fn touch_conversation(s: &mut State, m: &MessageRecord, newest: bool) {
    let Some(number) = m.conversation_number() else { return };
    let k = key(&m.tenant_id, &conversation_id(&m.contact_id, number));
    let created = !s.conversations.contains_key(&k);
    let c = s
        .conversations
        .entry(k)
        .or_insert_with(|| Conversation::new(&m.tenant_id, &m.contact_id, number, m.created_at));
    match m.direction {
        Direction::Inbound => c.on_inbound(m, newest || created),
        Direction::Outbound => c.on_outbound(m, created),
    }
    // The conversation item and its inbox entry (GSI1 projects every attribute, so any change
    // writes the entry).
    super::note_write(s, crate::store::keys::contact_pk(&m.tenant_id, &m.contact_id));
    super::note_write(s, crate::store::keys::inbox_gsi1pk(&m.tenant_id));
}

/// The contact's conversations and notes go with its partition (erasure).
pub(super) fn contact_conversation_keys(s: &State, tenant_id: &str, contact_id: &str) -> (Vec<Key>, Vec<Key>) {
    let conversations = s
        .conversations
        .iter()
        .filter(|((t, _), c)| t == tenant_id && c.contact_id == contact_id)
        .map(|(k, _)| k.clone())
        .collect();
    let notes = s
        .notes
        .iter()
        .filter(|((t, _), n)| t == tenant_id && n.contact_id == contact_id)
        .map(|(k, _)| k.clone())
        .collect();
    (conversations, notes)
}

fn tenant_active(s: &State, tenant_id: &str) -> bool {
    s.tenants
        .get(tenant_id)
        .is_some_and(|t| t.status == TenantStatus::Active)
}

/// The keys of a user made to follow it (role; revoked when disabled), as `key_follows`.
fn keys_follow(s: &mut State, user: &User) {
    for key_id in &user.key_ids {
        if let Some(k) = s.keys.get_mut(&key(&user.tenant_id, key_id)) {
            k.role = user.role;
            if user.status == UserStatus::Disabled && k.revoked_at.is_none() {
                k.revoked_at = Some(user.updated_at);
            }
        }
    }
}

impl UserStore for MemStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.enter(Op::CreateUser, 1).await?;
        let mut s = self.state();
        if !tenant_active(&s, &user.tenant_id) {
            return Err(StoreError::NotFound);
        }
        let email_taken = s
            .users
            .values()
            .any(|u| u.tenant_id == user.tenant_id && u.email == user.email);
        if email_taken {
            return Err(StoreError::Conflict("another user of the tenant has this email".into()));
        }
        s.users.insert(key(&user.tenant_id, &user.user_id), user.clone());
        Ok(())
    }

    async fn get_user(&self, tenant_id: &str, user_id: &str) -> Result<Option<User>, StoreError> {
        self.enter(Op::GetUser, 1).await?;
        Ok(self.state().users.get(&key(tenant_id, user_id)).cloned())
    }

    async fn list_users(&self, tenant_id: &str, limit: i32, start: Option<Position>) -> Result<Page<User>, StoreError> {
        self.enter(Op::ListUsers, 1).await?;
        let sorted = self
            .state()
            .users
            .iter()
            .filter(|((t, _), _)| t == tenant_id)
            .map(|((_, id), u)| (id.clone(), u.clone()))
            .collect();
        Ok(page_of(sorted, super::Order::Ascending, limit, start))
    }

    async fn update_user(&self, before: &User, after: &User) -> Result<(), StoreError> {
        self.enter(Op::UpdateUser, 1).await?;
        let mut s = self.state();
        let k = key(&before.tenant_id, &before.user_id);
        if s.users.get(&k).is_none_or(|u| u.updated_at != before.updated_at) {
            return Err(StoreError::VersionMismatch);
        }
        let email_taken = s
            .users
            .values()
            .any(|u| u.tenant_id == after.tenant_id && u.user_id != after.user_id && u.email == after.email);
        if email_taken {
            return Err(StoreError::Conflict("another user of the tenant has this email".into()));
        }
        s.users.insert(k, after.clone());
        keys_follow(&mut s, after);
        Ok(())
    }

    async fn add_user_key(&self, user: &User, record: &ApiKeyRecord, dropped: &[String]) -> Result<(), StoreError> {
        self.enter(Op::AddUserKey, 1).await?;
        let mut s = self.state();
        if !tenant_active(&s, &user.tenant_id) {
            return Err(StoreError::NotFound);
        }
        let k = key(&user.tenant_id, &user.user_id);
        let stored = s.users.get_mut(&k).ok_or(StoreError::VersionMismatch)?;
        if stored.updated_at != user.updated_at || stored.status != UserStatus::Active {
            return Err(StoreError::VersionMismatch);
        }
        stored.key_ids.retain(|k| !dropped.contains(k));
        stored.key_ids.push(record.key_id.clone());
        stored.updated_at = record.created_at;
        for k in dropped {
            s.keys.remove(&key(&user.tenant_id, k));
        }
        s.keys.insert(key(&record.tenant_id, &record.key_id), record.clone());
        Ok(())
    }
}

impl MemStore {
    pub(super) fn conversation(&self, tenant_id: &str, conversation_id: &str) -> Option<Conversation> {
        self.state()
            .conversations
            .get(&key(tenant_id, conversation_id))
            .cloned()
    }
}

impl ConversationStore for MemStore {
    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        self.enter(Op::GetConversation, 1).await?;
        Ok(self.conversation(tenant_id, conversation_id))
    }

    async fn inbox(
        &self,
        tenant_id: &str,
        query: &InboxQuery,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<InboxEntry>, StoreError> {
        // The query, then the batch read of the page's contacts.
        self.enter(Op::Inbox, 2).await?;
        let s = self.state();
        let mut sorted: Vec<(String, Conversation)> = s
            .conversations
            .iter()
            .filter(|((t, _), c)| t == tenant_id && query.filter.matches(c, query.now) && query.visibility.allows(c))
            .map(|(_, c)| {
                let at = match query.filter.sort {
                    InboxSort::LastActivity => c.last_activity_at,
                    InboxSort::Waiting => c.waiting_since.unwrap_or(c.last_activity_at),
                };
                (inbox_sk(at.timestamp_millis(), &c.conversation_id), c.clone())
            })
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let order = match query.filter.sort {
            InboxSort::LastActivity => {
                sorted.reverse();
                super::Order::Descending
            }
            InboxSort::Waiting => super::Order::Ascending,
        };
        let page = page_of(sorted, order, limit, start);
        let tag = query.filter.tag.as_deref();
        let items = page
            .items
            .into_iter()
            .map(|conversation| {
                let contact = s
                    .contacts
                    .get(&key(tenant_id, &conversation.contact_id))
                    .map(|r| ContactSummary::from(&r.contact));
                // Like the table's projection: only the reader's own mark, no report bookkeeping.
                let mut conversation = conversation;
                conversation.reads.retain(|reader, _| *reader == query.reader);
                conversation.measured_from = None;
                conversation.responded_from = None;
                conversation.last_outbound_by = None;
                conversation.resolved_by = None;
                InboxEntry { conversation, contact }
            })
            .filter(|e| tag.is_none_or(|t| e.contact.as_ref().is_some_and(|c| c.has_tag(t))))
            .collect();
        Ok(Page { items, next: page.next })
    }

    async fn assign(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        assignee: Option<&str>,
        expected: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<AssignOutcome, StoreError> {
        self.enter(Op::Assign, 1).await?;
        let mut s = self.state();
        let user_ok = assignee.is_none_or(|u| s.users.get(&key(tenant_id, u)).is_some_and(User::is_active));
        let c = s
            .conversations
            .get_mut(&key(tenant_id, conversation_id))
            .ok_or(StoreError::NotFound)?;
        if c.assignee.as_deref() != expected {
            return Ok(AssignOutcome::Lost {
                current: c.assignee.clone(),
            });
        }
        if !user_ok {
            return Ok(AssignOutcome::UnknownAssignee);
        }
        c.assignee = assignee.map(str::to_owned);
        c.updated_at = at;
        Ok(AssignOutcome::Assigned(Box::new(c.clone())))
    }

    async fn set_status(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        change: &StatusChange,
        only_from: Option<(ConversationStatus, DateTime<Utc>)>,
    ) -> Result<Option<Conversation>, StoreError> {
        self.enter(Op::SetConversationStatus, 1).await?;
        let mut s = self.state();
        let Some(c) = s.conversations.get_mut(&key(tenant_id, conversation_id)) else {
            return match only_from {
                Some(_) => Ok(None),
                None => Err(StoreError::NotFound),
            };
        };
        if only_from.is_some_and(|(status, seen)| c.status != status || c.updated_at != seen) {
            return Ok(None);
        }
        c.set_status(change);
        Ok(Some(c.clone()))
    }

    async fn due_snoozes(&self, tenant_id: &str, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        self.enter(Op::DueSnoozes, 1).await?;
        let s = self.state();
        let mut due: Vec<(DateTime<Utc>, String)> = s
            .conversations
            .values()
            .filter(|c| c.tenant_id == tenant_id && c.status == ConversationStatus::Snoozed)
            .filter_map(|c| {
                c.snooze_until
                    .filter(|u| *u <= now)
                    .map(|u| (u, c.conversation_id.clone()))
            })
            .collect();
        due.sort();
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn mark_read(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        reader: &str,
        up_to: u64,
    ) -> Result<Conversation, StoreError> {
        self.enter(Op::MarkRead, 1).await?;
        let mut s = self.state();
        let c = s
            .conversations
            .get_mut(&key(tenant_id, conversation_id))
            .ok_or(StoreError::NotFound)?;
        let mark = c.reads.entry(reader.to_owned()).or_insert(0);
        *mark = (*mark).max(up_to);
        Ok(c.clone())
    }

    async fn add_note(&self, note: &Note) -> Result<(), StoreError> {
        self.enter(Op::AddNote, 1).await?;
        let mut s = self.state();
        if !s
            .conversations
            .contains_key(&key(&note.tenant_id, &note.conversation_id))
        {
            return Err(StoreError::NotFound);
        }
        s.notes.insert(key(&note.tenant_id, &note.note_id), note.clone());
        Ok(())
    }

    async fn notes(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Note>, StoreError> {
        self.enter(Op::Notes, 1).await?;
        let sorted = self
            .state()
            .notes
            .iter()
            .rev()
            .filter(|((t, _), n)| t == tenant_id && n.conversation_id == conversation_id)
            .map(|((_, id), n)| (id.clone(), n.clone()))
            .collect();
        Ok(page_of(sorted, super::Order::Descending, limit, start))
    }

    async fn contact_conversations(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<(Vec<Conversation>, Vec<Note>), StoreError> {
        self.enter(Op::ContactConversations, 2).await?;
        let s = self.state();
        let (conversations, notes) = contact_conversation_keys(&s, tenant_id, contact_id);
        Ok((
            conversations.iter().map(|k| s.conversations[k].clone()).collect(),
            notes.iter().map(|k| s.notes[k].clone()).collect(),
        ))
    }

    /// The inbox here reads each row's contact as it is now, so there is no copy to refresh:
    /// only the requests are counted (the contact's read and its conversations' query).
    async fn refresh_contact_cards(&self, _tenant_id: &str, _contact_id: &str) -> Result<usize, StoreError> {
        self.enter(Op::RefreshContactCards, 2).await?;
        Ok(0)
    }

    async fn idle_conversations(
        &self,
        tenant_id: &str,
        since: Option<DateTime<Utc>>,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<Conversation>, StoreError> {
        self.enter(Op::IdleConversations, 1).await?;
        let mut idle: Vec<(String, Conversation)> = self
            .state()
            .conversations
            .iter()
            .filter(|((t, _), c)| {
                t == tenant_id && c.last_activity_at < before && since.is_none_or(|s| c.last_activity_at >= s)
            })
            .map(|(_, c)| {
                (
                    inbox_sk(c.last_activity_at.timestamp_millis(), &c.conversation_id),
                    c.clone(),
                )
            })
            .filter(|(sk, _)| next.as_ref().is_none_or(|after| sk > after))
            .collect();
        idle.sort_by(|a, b| a.0.cmp(&b.0));
        let full = idle.len() > limit.max(1) as usize;
        idle.truncate(limit.max(1) as usize);
        let next = full.then(|| idle.last().map(|(sk, _)| sk.clone())).flatten();
        Ok(WalkPage {
            items: idle.into_iter().map(|(_, c)| c).collect(),
            next,
        })
    }

    async fn delete_conversation(&self, conversation: &Conversation) -> Result<u64, StoreError> {
        self.enter(Op::DeleteConversation, 2).await?;
        let mut s = self.state();
        let k = key(&conversation.tenant_id, &conversation.conversation_id);
        if s.conversations
            .get(&k)
            .is_none_or(|c| c.updated_at != conversation.updated_at)
        {
            return Ok(0);
        }
        s.conversations.remove(&k);
        let before = s.notes.len();
        s.notes
            .retain(|(t, _), n| !(*t == conversation.tenant_id && n.conversation_id == conversation.conversation_id));
        Ok(1 + (before - s.notes.len()) as u64)
    }
}
