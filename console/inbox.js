// The inbox: conversations by last activity with the caller's unread counts, the API's
// filters, and a search over contacts by name or phone.

import { api, query } from './api.js';
import { h, fill, when, uid } from './dom.js';

const STATUSES = ['', 'open', 'pending', 'snoozed', 'resolved'];
const DEFAULT_FILTERS = { assignee: '', status: 'open', tag: '', window: '' };

export class Inbox {
  constructor(el, context) {
    this.el = el;
    this.context = context;
    this.filters = { ...DEFAULT_FILTERS };
    this.items = [];
    this.next = null;
    this.selected = null;
    this.search = '';
    this.list = h('ul', { class: 'rows', 'data-testid': 'inbox-list' });
    this.more = h('button', { type: 'button', class: 'link', hidden: true, onclick: () => this.loadMore() }, 'Older conversations');
    this.status = h('p', { class: 'muted', role: 'status' });
    el.append(this.renderFilters(), this.status, this.list, this.more);
  }

  renderFilters() {
    const select = (label, name, options) => {
      const id = uid(name);
      return h('div', { class: 'field' },
        h('label', { for: id }, label),
        h('select', {
          id, name,
          onchange: (e) => { this.filters[name] = e.target.value; this.refresh(); },
        }, options.map(([value, text]) => h('option', { value, selected: this.filters[name] === value }, text))));
    };
    const searchId = uid('search');
    const tagId = uid('tag');
    let timer = null;
    return h('form', { class: 'filters', role: 'search', onsubmit: (e) => { e.preventDefault(); this.refresh(); } },
      h('div', { class: 'field wide' },
        h('label', { for: searchId }, 'Search by name or phone'),
        h('input', {
          id: searchId, type: 'search', name: 'q', autocomplete: 'off',
          oninput: (e) => {
            clearTimeout(timer);
            timer = setTimeout(() => { this.search = e.target.value.trim(); this.refresh(); }, 250);
          },
        })),
      select('Assigned', 'assignee', [['me', 'Mine'], ['none', 'Unassigned'], ['', 'All']].filter(([v]) => v !== 'me' || this.context.me.user)),
      select('Status', 'status', STATUSES.map((s) => [s, s ? s[0].toUpperCase() + s.slice(1) : 'Any'])),
      select('Window', 'window', [['', 'Any'], ['open', 'Open'], ['closed', 'Closed']]),
      h('div', { class: 'field' },
        h('label', { for: tagId }, 'Tag'),
        h('input', {
          id: tagId, name: 'tag', autocomplete: 'off', size: 8,
          onchange: (e) => { this.filters.tag = e.target.value.trim(); this.refresh(); },
        })));
  }

  /** The first page under the default filters (read while the console starts). */
  static firstPage() {
    return api('GET', `/v1/conversations${query({ ...DEFAULT_FILTERS, limit: 50 })}`);
  }

  show(page) {
    this.items = page.items;
    this.next = page.next_cursor;
    this.render();
  }

  /** Re-reads the first page (or the search results). */
  async refresh() {
    clearTimeout(this.soon);
    const token = (this.token = Symbol('refresh'));
    try {
      if (this.search) {
        const found = await api('GET', `/v1/contacts${query({ q: this.search, limit: 50 })}`);
        if (token !== this.token) return;
        this.items = [];
        this.next = null;
        return this.renderSearch(found.items);
      }
      const page = await api('GET', `/v1/conversations${query({ ...this.filters, limit: 50 })}`);
      if (token !== this.token) return;
      this.items = page.items;
      this.next = page.next_cursor;
      this.render();
    } catch (e) {
      fill(this.status, `Could not load the inbox: ${e.message}`);
    }
  }

  /** A refresh shortly (events often come in bursts). */
  refreshSoon() {
    clearTimeout(this.soon);
    this.soon = setTimeout(() => this.refresh(), 150);
  }

  async loadMore() {
    if (!this.next) return;
    const page = await api('GET', `/v1/conversations${query({ ...this.filters, limit: 50, cursor: this.next })}`);
    const known = new Set(this.items.map((c) => c.id));
    this.items.push(...page.items.filter((c) => !known.has(c.id)));
    this.next = page.next_cursor;
    this.render();
  }

  select(conversationId) {
    this.selected = conversationId;
    for (const row of this.list.querySelectorAll('[data-id]')) {
      row.toggleAttribute('aria-current', row.dataset.id === conversationId);
    }
  }

  render() {
    fill(this.status, this.items.length ? '' : 'No conversations match.');
    fill(this.list, this.items.map((c) => this.row(c)));
    this.more.hidden = !this.next;
    this.select(this.selected);
  }

  row(c) {
    const name = c.contact?.name || c.contact?.phone || 'Unknown contact';
    const preview = c.preview ? (c.preview.direction === 'outbound' ? 'You: ' : '') + (c.preview.text || `[${c.preview.type}]`) : '';
    return h('li', { 'data-id': c.id },
      h('a', { href: `#/c/${encodeURIComponent(c.id)}`, class: 'row', 'data-testid': 'conversation-row' },
        h('span', { class: 'row-top' },
          h('strong', { class: 'name' }, name),
          h('time', { datetime: c.last_activity_at }, when(c.last_activity_at))),
        h('span', { class: 'row-bottom' },
          h('span', { class: 'preview' }, preview),
          c.unread > 0 ? h('span', { class: 'badge', 'data-testid': 'unread', 'aria-label': `${c.unread} unread` }, String(c.unread)) : null),
        h('span', { class: 'row-meta muted' },
          c.status, ' \u00b7 ', c.assignee ? this.context.userName(c.assignee) : 'unassigned',
          c.window_open ? ' \u00b7 window open' : '')));
  }

  renderSearch(contacts) {
    fill(this.status, contacts.length ? `${contacts.length} contact(s)` : 'No contact matches.');
    this.more.hidden = true;
    fill(this.list, contacts.map((c) => h('li', {},
      h('a', { href: `#/contact/${encodeURIComponent(c.id)}`, class: 'row', 'data-testid': 'contact-row' },
        h('span', { class: 'row-top' }, h('strong', { class: 'name' }, c.name || c.phone || c.id)),
        h('span', { class: 'row-bottom muted' }, c.phone || '')))));
  }
}
