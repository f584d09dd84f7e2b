// One conversation: its timeline (messages and internal notes), the actions on it (assign,
// resolve, snooze, read mark) and the composer. A contact without a conversation yet opens
// here too, with the composer limited to templates (no customer service window).

import { api, query } from './api.js';
import { h, fill, when, uid } from './dom.js';
import { Composer } from './composer.js';

const STATUS_MARK = { queued: '\u23f3 queued', unknown: '? unknown', sent: '\u2713 sent', delivered: '\u2713\u2713 delivered', read: '\u2713\u2713 read', played: '\u2713\u2713 played', failed: '\u26a0 failed', rejected: '\u26a0 rejected' };

export class ConversationPane {
  constructor(el, context, contactPane) {
    this.el = el;
    this.context = context;
    this.contactPane = contactPane;
    this.conversation = null;
    this.contact = null;
    this.messages = [];
    this.notes = [];
    this.olderCursor = null;
    this.close();
  }

  close() {
    this.conversation = null;
    this.contact = null;
    this.contactPane.show(null);
    fill(this.el, h('p', { class: 'empty muted' }, 'Choose a conversation.'));
  }

  async openConversation(id) {
    this.loading = id;
    try {
      const conversation = await api('GET', `/v1/conversations/${encodeURIComponent(id)}`);
      if (this.loading !== id) return;
      this.conversation = conversation;
      this.contactId = conversation.contact_id;
      await this.reload({ fresh: true });
    } catch (e) {
      fill(this.el, h('p', { class: 'error', role: 'alert' }, `Could not open the conversation: ${e.message}`));
    }
  }

  /** A contact from a search: its conversation if it has one, else the contact alone. */
  async openContact(contactId) {
    this.loading = contactId;
    for (const number of this.context.numbers) {
      try {
        const id = `${contactId}-${number.phone_number_id}`;
        await api('GET', `/v1/conversations/${encodeURIComponent(id)}`);
        location.replace(`#/c/${encodeURIComponent(id)}`);
        return;
      } catch (e) {
        if (e.status !== 404) return fill(this.el, h('p', { class: 'error', role: 'alert' }, e.message));
      }
    }
    this.conversation = null;
    this.contactId = contactId;
    await this.reload({ fresh: true });
  }

  /** Re-reads what the pane shows (after an event, a send or an action). */
  async reload({ fresh = false } = {}) {
    const contactId = this.contactId;
    const c = this.conversation;
    const messagesPath = c
      ? `/v1/conversations/${encodeURIComponent(c.id)}/messages`
      : `/v1/contacts/${encodeURIComponent(contactId)}/messages`;
    try {
      const [conversation, contact, messages, notes] = await Promise.all([
        c && !fresh ? api('GET', `/v1/conversations/${encodeURIComponent(c.id)}`) : c,
        api('GET', `/v1/contacts/${encodeURIComponent(contactId)}`),
        api('GET', `${messagesPath}${query({ limit: 50 })}`),
        c ? api('GET', `/v1/conversations/${encodeURIComponent(c.id)}/notes?limit=50`) : { items: [] },
        this.context.usersKnown, // the assignee picker lists them
      ]);
      if (this.contactId !== contactId) return;
      this.conversation = conversation;
      this.contact = contact;
      // Keep older pages already loaded; the newest page replaces its own messages.
      const newest = new Map(messages.items.map((m) => [m.id, m]));
      const older = fresh ? [] : this.messages.filter((m) => !newest.has(m.id) && m.created_at < (messages.items.at(-1)?.created_at ?? ''));
      this.messages = [...messages.items, ...older];
      if (fresh) this.olderCursor = messages.next_cursor;
      this.notes = notes.items;
      this.render();
      this.contactPane.show(contact, () => this.reload());
      this.markRead();
    } catch (e) {
      if (e.status === 404 && this.contact) {
        // Erased meanwhile.
        this.contactPane.show(null);
        fill(this.el, h('p', { class: 'muted' }, 'This contact no longer exists.'));
        return;
      }
      fill(this.el, h('p', { class: 'error', role: 'alert' }, `Could not load: ${e.message}`));
    }
  }

  onEvents(events) {
    if (!this.contactId) return;
    const mine = events.some((e) => e.data?.contact_id === this.contactId
      || (this.conversation && e.data?.conversation_id === this.conversation.id));
    if (mine) {
      clearTimeout(this.soon);
      this.soon = setTimeout(() => this.reload(), 100);
    }
  }

  async loadOlder() {
    if (!this.olderCursor) return;
    const path = this.conversation
      ? `/v1/conversations/${encodeURIComponent(this.conversation.id)}/messages`
      : `/v1/contacts/${encodeURIComponent(this.contactId)}/messages`;
    const page = await api('GET', `${path}${query({ limit: 50, cursor: this.olderCursor })}`);
    const known = new Set(this.messages.map((m) => m.id));
    this.messages.push(...page.items.filter((m) => !known.has(m.id)));
    this.olderCursor = page.next_cursor;
    this.render();
  }

  async markRead() {
    const c = this.conversation;
    if (!c || c.unread <= 0 || document.hidden) return;
    try {
      this.conversation = await api('POST', `/v1/conversations/${encodeURIComponent(c.id)}/read`, { up_to: c.last_seq });
    } catch {
      // The badge stays; the next load tries again.
    }
  }

  render() {
    const c = this.conversation;
    const contact = this.contact;
    const timeline = h('ol', { class: 'timeline', 'data-testid': 'timeline', 'aria-label': 'Messages and notes' },
      this.olderCursor ? h('li', { class: 'older' }, h('button', { type: 'button', class: 'link', onclick: () => this.loadOlder() }, 'Older messages')) : null,
      this.timelineItems().map((item) => (item.kind === 'note' ? this.noteItem(item.note) : this.messageItem(item.message))));
    const composer = this.context.can.write
      ? new Composer(this.context, { conversation: c, contact, onSent: () => this.reload() }).element()
      : h('p', { class: 'muted read-only', 'data-testid': 'read-only' }, 'Your role can read this conversation but not reply.');
    fill(this.el,
      h('div', { class: 'conversation-head' },
        h('a', { href: '#/', class: 'back', 'aria-label': 'Back to the inbox' }, '\u2190'),
        h('div', { class: 'title' },
          h('h2', {}, contact?.name || contact?.phone || 'Contact'),
          h('p', { class: 'muted' }, contact?.phone || '', c ? ` \u00b7 ${c.status}` : ' \u00b7 no conversation yet',
            c ? ` \u00b7 ${c.window_open ? `window open until ${when(c.window_expires_at)}` : 'window closed'}` : '')),
        c ? this.actions(c) : null),
      this.alert = h('p', { class: 'error', role: 'alert', 'data-testid': 'conversation-alert' }),
      timeline,
      c && this.context.can.write ? this.noteForm(c) : null,
      composer);
    const last = timeline.lastElementChild;
    if (last) last.scrollIntoView({ block: 'end' });
  }

  timelineItems() {
    const items = this.messages.map((message) => ({ kind: 'message', at: message.created_at, message }));
    items.push(...this.notes.map((note) => ({ kind: 'note', at: note.created_at, note })));
    return items.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
  }

  messageItem(m) {
    const quoted = m.context_wamid ? this.messages.find((other) => other.wamid === m.context_wamid) : null;
    return h('li', { class: `message ${m.direction}`, 'data-testid': 'message', 'data-id': m.id },
      quoted ? h('blockquote', { class: 'quote' }, summary(quoted)) : m.context_wamid ? h('blockquote', { class: 'quote muted' }, 'a reply to an earlier message') : null,
      body(m),
      h('span', { class: 'meta muted' },
        h('time', { datetime: m.timestamp }, when(m.timestamp)),
        m.direction === 'outbound' ? h('span', { class: `status status-${m.status}`, 'data-testid': 'message-status' }, ` ${STATUS_MARK[m.status] || m.status}`) : null),
      m.error ? h('p', { class: 'error' }, `${m.error.title || 'Error'}${m.error.detail ? `: ${m.error.detail}` : ''} (code ${m.error.code})`) : null);
  }

  noteItem(note) {
    return h('li', { class: 'note', 'data-testid': 'note' },
      h('p', { class: 'note-label muted' }, `Internal note \u00b7 ${this.context.userName(note.author)}`),
      h('p', {}, note.body),
      h('time', { class: 'meta muted', datetime: note.created_at }, when(note.created_at)));
  }

  actions(c) {
    if (!this.context.can.write) return h('p', { class: 'muted' }, `Assigned to ${this.context.userName(c.assignee)}`);
    const me = this.context.me.user;
    const assign = async (assignee) => {
      try {
        this.conversation = await api('POST', `/v1/conversations/${encodeURIComponent(c.id)}/assign`, { assignee, expected: c.assignee ?? null });
        this.render();
      } catch (e) {
        if (e.status === 409) {
          await this.reload();
          fill(this.alert, `Someone else changed the assignment first: now ${this.context.userName(this.conversation.assignee)}.`);
        } else {
          fill(this.alert, e.message);
        }
      }
    };
    const setStatus = async (status, snoozeUntil) => {
      try {
        this.conversation = await api('POST', `/v1/conversations/${encodeURIComponent(c.id)}/status`,
          snoozeUntil ? { status, snooze_until: snoozeUntil } : { status });
        this.render();
      } catch (e) {
        fill(this.alert, e.message);
      }
    };
    const assigneeLabel = h('span', { class: 'assignee', 'data-testid': 'assignee' }, `Assigned to ${this.context.userName(c.assignee)}`);
    const controls = [assigneeLabel];
    if (me && c.assignee !== me.id) controls.push(h('button', { type: 'button', 'data-testid': 'assign-me', onclick: () => assign(me.id) }, 'Assign to me'));
    if (c.assignee) controls.push(h('button', { type: 'button', onclick: () => assign(null) }, 'Unassign'));
    if (this.context.can.admin && this.context.users.length) {
      const id = uid('assign-to');
      const pick = h('select', { id }, this.context.users.filter((u) => u.status !== 'disabled').map((u) => h('option', { value: u.id }, u.name || u.email || u.id)));
      controls.push(h('label', { for: id, class: 'sr-only' }, 'Assign to'), pick,
        h('button', { type: 'button', onclick: () => assign(pick.value) }, 'Assign'));
    }
    if (c.status === 'resolved' || c.status === 'snoozed') {
      controls.push(h('button', { type: 'button', onclick: () => setStatus('open') }, 'Reopen'));
    } else {
      controls.push(h('button', { type: 'button', 'data-testid': 'resolve', onclick: () => setStatus('resolved') }, 'Resolve'));
      const id = uid('snooze');
      const until = h('input', { id, type: 'datetime-local', value: tomorrowNine() });
      controls.push(h('label', { for: id, class: 'sr-only' }, 'Snooze until'), until,
        h('button', { type: 'button', onclick: () => setStatus('snoozed', new Date(until.value).toISOString()) }, 'Snooze'));
    }
    return h('div', { class: 'actions' }, controls);
  }

  noteForm(c) {
    const id = uid('note');
    const text = h('input', { id, name: 'note', autocomplete: 'off', maxlength: 4096, placeholder: 'Only your team sees notes' });
    return h('form', {
      class: 'note-form',
      onsubmit: async (e) => {
        e.preventDefault();
        if (!text.value.trim()) return;
        try {
          await api('POST', `/v1/conversations/${encodeURIComponent(c.id)}/notes`, { body: text.value.trim() });
          text.value = '';
          this.reload();
        } catch (err) {
          fill(this.alert, err.message);
        }
      },
    }, h('label', { for: id }, 'Internal note'), text, h('button', { type: 'submit' }, 'Add note'));
  }
}

function tomorrowNine() {
  const d = new Date();
  d.setDate(d.getDate() + 1);
  d.setHours(9, 0, 0, 0);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T09:00`;
}

/** One line of a message, for quotes. */
function summary(m) {
  const c = m.content || {};
  return c.body || c.caption || c.text || c.name || `[${m.type}]`;
}

/** A message's content, by WhatsApp type. */
function body(m) {
  const c = m.content || {};
  const media = m.media;
  const mediaState = media && !media.url
    ? h('p', { class: 'muted' }, media.status === 'failed' ? 'The media could not be fetched.' : 'Fetching the media\u2026')
    : null;
  switch (m.type) {
    case 'text':
      return h('p', { class: 'text' }, c.body ?? '');
    case 'image':
    case 'sticker':
      return h('div', {}, media?.url ? h('img', { src: media.url, alt: c.caption || `${m.type} from the conversation`, loading: 'lazy' }) : mediaState,
        c.caption ? h('p', { class: 'text' }, c.caption) : null);
    case 'video':
    case 'audio':
      return h('div', {}, media?.url ? h(m.type, { src: media.url, controls: true, preload: 'none' }) : mediaState,
        c.caption ? h('p', { class: 'text' }, c.caption) : null);
    case 'document':
      return h('div', {}, media?.url ? h('a', { href: media.url, rel: 'noopener noreferrer', target: '_blank', download: c.filename || true }, `\ud83d\udcc4 ${c.filename || 'Document'}`) : mediaState,
        c.caption ? h('p', { class: 'text' }, c.caption) : null);
    case 'location':
      return h('p', { class: 'text' }, `\ud83d\udccd ${[c.name, c.address].filter(Boolean).join(', ') || 'Location'} (${c.latitude}, ${c.longitude})`);
    case 'reaction':
      return h('p', { class: 'text reaction' }, c.emoji ? `Reacted ${c.emoji}` : 'Removed a reaction');
    case 'interactive': {
      const reply = c.button_reply || c.list_reply || c.nfm_reply;
      return h('p', { class: 'text' }, reply ? reply.title || reply.body || '[reply]' : c.body?.text || '[interactive message]');
    }
    case 'button':
      return h('p', { class: 'text' }, c.text || c.payload || '[button]');
    case 'template':
      return h('p', { class: 'text' }, h('span', { class: 'tag' }, 'template'), ` ${c.name || ''} (${m.language || c.language?.code || ''})`);
    default:
      return h('p', { class: 'text muted' }, `[${m.type} message]`);
  }
}
