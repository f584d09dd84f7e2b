// Broadcasts (#/broadcasts, #/broadcasts/<id>): the tenant's campaigns with their counters,
// one campaign's skip reasons, failures and recipients, the lifecycle actions the role allows
// (the API has the last word: an agent the tenant does not let broadcast gets its 403 shown)
// and the results export. Re-read every few seconds while open: the engine moves them.

import { api, query, untilExported } from './api.js';
import { h, fill, when, uid } from './dom.js';

const REFRESH_MS = 5000;
const ACTIONS = {
  draft: ['start', 'cancel'],
  scheduled: ['pause', 'cancel'],
  running: ['pause', 'cancel'],
  paused: ['resume', 'cancel'],
};
const RECIPIENT_STATUSES = ['', 'pending', 'skipped', 'queued', 'sent', 'delivered', 'read', 'failed', 'held_back', 'capped'];

const sum = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

function counterList(c) {
  const items = [
    ['Targeted', c.targeted], ['Skipped', sum(c.skipped)], ['Queued', c.queued], ['Sent', c.sent],
    ['Delivered', c.delivered], ['Read', c.read], ['Failed', sum(c.failed)], ['Replied', c.replied],
    ['Opted out after', c.opted_out_after],
  ];
  return h('dl', { class: 'counters', 'data-testid': 'counters' },
    items.map(([label, value]) => [h('dt', {}, label), h('dd', { 'data-counter': label.toLowerCase() }, String(value ?? 0))]));
}

function breakdown(title, counts) {
  const entries = Object.entries(counts || {});
  if (!entries.length) return null;
  return h('section', {}, h('h3', {}, title),
    h('ul', { class: 'breakdown' }, entries.map(([k, v]) => h('li', {}, `${k.replaceAll('_', ' ')}: ${v}`))));
}

function statusLine(b) {
  const parts = [b.status];
  if (b.pause_reason) parts.push(`(${b.pause_reason.replaceAll('_', ' ')})`);
  if (b.progress?.waiting_for) parts.push(`\u00b7 waiting for ${b.progress.waiting_for.replaceAll('_', ' ')} until ${when(b.progress.wait_until)}`);
  return parts.join(' ');
}

export class BroadcastsView {
  constructor(el, context) {
    this.el = el;
    this.context = context;
    this.timer = null;
    this.openId = null;
    this.filter = '';
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Shows the list, or one broadcast (`id`). */
  async show(id) {
    this.stop();
    this.openId = id || null;
    try {
      if (this.openId) await this.renderOne(this.openId);
      else await this.renderList();
    } catch (e) {
      fill(this.el, h('p', { class: 'error', role: 'alert' }, e.message));
    }
    this.timer = setTimeout(() => this.show(this.openId), REFRESH_MS);
  }

  async renderList() {
    const page = await api('GET', `/v1/broadcasts${query({ limit: 50 })}`);
    const rows = (page.items || []).map((b) => h('li', {},
      h('a', { class: 'row', href: `#/broadcasts/${encodeURIComponent(b.id)}`, 'data-testid': 'broadcast-row' },
        h('span', { class: 'row-top' }, h('strong', {}, b.name), h('span', { class: 'muted', 'data-testid': 'broadcast-status' }, b.status)),
        h('span', { class: 'row-bottom muted row-meta' },
          h('span', {}, `${b.template.name} (${b.template.language})`),
          h('span', {}, `${b.counters.sent} sent of ${b.counters.targeted}`)))));
    fill(this.el,
      h('div', { class: 'broadcasts-head' }, h('h2', {}, 'Broadcasts'),
        h('p', { class: 'muted' }, 'Create campaigns with the API (POST /v1/broadcasts) or crmctl; follow and control them here.')),
      rows.length ? h('ul', { class: 'rows' }, rows) : h('p', { class: 'empty muted' }, 'No broadcasts yet.'));
  }

  async renderOne(id) {
    const b = await api('GET', `/v1/broadcasts/${encodeURIComponent(id)}`);
    const recipients = await api('GET', `/v1/broadcasts/${encodeURIComponent(id)}/recipients${query({ status: this.filter, limit: 50 })}`);
    const error = h('p', { class: 'error', role: 'alert' });
    const actions = this.context.can.write ? (ACTIONS[b.status] || []).map((action) => h('button', {
      type: 'button', class: action === 'cancel' ? 'danger' : 'primary', 'data-testid': `broadcast-${action}`,
      onclick: async () => {
        try {
          await api('POST', `/v1/broadcasts/${encodeURIComponent(id)}/${action}`);
          await this.show(id);
        } catch (e) {
          fill(error, e.message);
        }
      },
    }, action[0].toUpperCase() + action.slice(1))) : [];
    const receipt = h('div', { class: 'receipt', 'aria-live': 'polite' });
    const exportButton = this.context.can.admin
      ? h('button', { type: 'button', 'data-testid': 'broadcast-export', onclick: () => this.exportResults(id, exportButton) }, 'Export results')
      : null;
    const filterId = uid('recipient-status');
    const select = h('select', {
      id: filterId,
      onchange: () => { this.filter = select.value; this.show(id); },
    }, RECIPIENT_STATUSES.map((s) => h('option', { value: s, selected: s === this.filter }, s || 'all')));
    const rows = (recipients.items || []).map((r) => h('tr', { 'data-testid': 'recipient-row' },
      h('td', {}, h('a', { href: `#/contact/${encodeURIComponent(r.contact_id)}` }, r.contact_id)),
      h('td', {}, r.status), h('td', {}, r.reason || r.error_code || ''), h('td', {}, when(r.sent_at))));
    // The export's receipt survives the periodic re-read.
    const kept = this.receipt && this.receiptFor === id ? [...this.receipt.childNodes] : [];
    fill(receipt, kept);
    this.receipt = receipt;
    this.receiptFor = id;
    fill(this.el,
      h('div', { class: 'broadcasts-head' },
        h('a', { href: '#/broadcasts', class: 'link' }, '\u2190 All broadcasts'),
        h('h2', { 'data-testid': 'broadcast-name' }, b.name),
        h('p', { 'data-testid': 'broadcast-status' }, statusLine(b)),
        h('p', { class: 'muted' }, `${b.template.name} (${b.template.language}, ${b.category.toLowerCase()})`,
          b.start_at ? ` \u00b7 starts ${when(b.start_at)}` : '',
          b.quiet_hours ? ` \u00b7 quiet ${b.quiet_hours.start}\u2013${b.quiet_hours.end} (${b.time_zone})` : '')),
      h('div', { class: 'actions' }, actions, exportButton),
      error,
      receipt,
      counterList(b.counters),
      breakdown('Skipped', b.counters.skipped),
      breakdown('Failed (Meta code)', b.counters.failed),
      h('section', {}, h('h3', {}, 'Recipients'),
        h('label', { for: filterId }, 'Status'), select,
        rows.length
          ? h('table', { class: 'recipients' },
            h('thead', {}, h('tr', {}, ['Contact', 'Status', 'Reason / error', 'Sent'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, rows))
          : h('p', { class: 'muted' }, 'No recipients (yet): the audience is planned when it starts.'),
        recipients.next_cursor ? h('p', { class: 'muted' }, 'First 50 shown; the API pages through the rest.') : null));
  }

  async exportResults(id, button) {
    button.disabled = true;
    // The receipt element is re-created by each re-read: always write to the current one.
    const show = (...nodes) => fill(this.receipt, ...nodes);
    try {
      let job = await api('POST', `/v1/broadcasts/${encodeURIComponent(id)}/export`);
      show(h('p', {}, `Export ${job.export_id}: ${job.status}\u2026`));
      job = await untilExported(job);
      show(job.status === 'ready'
        ? h('p', { 'data-testid': 'broadcast-export-ready' }, `Results ready (${job.recipient_count ?? 0} recipients): `,
          h('a', { href: job.url, rel: 'noopener noreferrer', download: true }, 'download CSV'),
          ` (link valid ${Math.round((job.url_expires_in ?? 900) / 60)} min)`)
        : h('p', {}, `Export ${job.export_id}: ${job.status}`));
    } catch (e) {
      show(h('p', { class: 'error', role: 'alert' }, e.message));
    } finally {
      button.disabled = false;
    }
  }
}
