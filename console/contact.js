// The contact panel: the profile with inline edit (a JSON merge-patch of what changed), tags,
// marketing consent and restriction with their history, and the privacy rights (export and
// erasure, admins only, with the receipts shown).

import { api, untilExported } from './api.js';
import { h, fill, when, uid } from './dom.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class ContactPane {
  constructor(el, context) {
    this.el = el;
    this.context = context;
    this.opened = new Set();
  }

  show(contact, onChange) {
    this.contact = contact;
    this.onChange = onChange || (() => {});
    if (!contact) {
      // An erasure's receipt outlives the contact it erased.
      fill(this.el, this.erased ? [h('h2', {}, 'Contact erased'), this.receipt] : null);
      return;
    }
    if (contact.id !== this.shown) this.erased = false;
    // Keep an edit in progress (an event re-reads the contact while someone types), unless
    // the panel itself just changed the contact.
    const active = document.activeElement;
    const typing = this.el.contains(active) && ['INPUT', 'TEXTAREA'].includes(active.tagName);
    if (typing && !this.force && this.shown === contact.id) return;
    this.force = false;
    this.shown = contact.id;
    this.status = h('p', { class: 'muted', role: 'status', 'data-testid': 'contact-status' });
    this.receipt = h('div', { class: 'receipt', 'data-testid': 'receipt' });
    this.history = h('div', {});
    fill(this.el,
      h('h2', {}, 'Contact'),
      this.profileForm(contact),
      this.consentSection(contact),
      this.restrictionSection(contact),
      this.history,
      this.context.can.admin ? this.privacySection(contact) : null,
      this.receipt,
      this.status);
    this.loadHistory(contact.id);
  }

  /** After the panel's own change: re-read everything and show it. */
  changed() {
    this.force = true;
    this.onChange();
  }

  profileForm(contact) {
    const write = this.context.can.write;
    const field = (label, name, value, attrs = {}) => {
      const id = uid(name);
      return h('div', { class: 'field' }, h('label', { for: id }, label),
        h('input', { id, name, value: value ?? '', readonly: !write, autocomplete: 'off', ...attrs }));
    };
    const form = h('form', {
      class: 'profile',
      'data-testid': 'profile',
      onsubmit: async (e) => {
        e.preventDefault();
        const data = new FormData(form);
        const patch = {};
        const name = data.get('name').trim();
        const email = data.get('email').trim();
        const tags = data.get('tags').split(',').map((t) => t.trim()).filter(Boolean);
        if (name !== (contact.name ?? '')) patch.name = name || null;
        if (email !== (contact.email ?? '')) patch.email = email || null;
        if (tags.join(',') !== (contact.tags || []).join(',')) patch.tags = tags;
        if (!Object.keys(patch).length) return fill(this.status, 'Nothing changed.');
        try {
          await api('PATCH', `/v1/contacts/${encodeURIComponent(contact.id)}`, patch, { contentType: 'application/merge-patch+json' });
          fill(this.status, 'Saved.');
          document.activeElement?.blur();
          this.changed();
        } catch (err) {
          fill(this.status, `Not saved: ${err.message}`);
        }
      },
    },
    field('Name', 'name', contact.name),
    h('p', { class: 'muted' }, `Phone ${contact.phone || '\u2014'}${contact.profile_name ? ` \u00b7 WhatsApp name ${contact.profile_name}` : ''}`),
    field('Email', 'email', contact.email, { type: 'email' }),
    field('Tags (comma separated)', 'tags', (contact.tags || []).join(', ')),
    Object.keys(contact.attributes || {}).length
      ? h('dl', { class: 'attributes' }, Object.entries(contact.attributes).map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]))
      : null,
    write ? h('button', { type: 'submit' }, 'Save profile') : null);
    return form;
  }

  consentSection(contact) {
    const current = contact.consent?.marketing ?? 'unknown';
    const section = h('section', { class: 'consent', 'aria-label': 'Marketing consent' },
      h('h3', {}, 'Marketing consent'),
      h('p', { 'data-testid': 'consent' }, current.replace('_', ' '), contact.consent?.source ? ` (${contact.consent.source})` : ''));
    if (!this.context.can.write) return section;
    const id = uid('consent');
    const pick = h('select', { id }, ['opted_in', 'opted_out'].map((v) => h('option', { value: v, selected: v === current }, v.replace('_', ' '))));
    const sourceId = uid('source');
    const source = h('input', { id: sourceId, autocomplete: 'off', placeholder: 'e.g. asked in chat' });
    section.append(h('form', {
      class: 'inline',
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api('PUT', `/v1/contacts/${encodeURIComponent(contact.id)}/consent`, { marketing: pick.value, source: source.value.trim() || 'console' });
          this.changed();
        } catch (err) {
          fill(this.status, err.message);
        }
      },
    }, h('label', { for: id }, 'Set to'), pick, h('label', { for: sourceId }, 'Source'), source, h('button', { type: 'submit' }, 'Record')));
    return section;
  }

  restrictionSection(contact) {
    const section = h('section', { class: 'restriction', 'aria-label': 'Restriction of processing' },
      h('h3', {}, 'Restriction'),
      h('p', { 'data-testid': 'restriction' }, contact.restricted ? 'Restricted: nothing is sent to this contact' : 'Not restricted'));
    if (!this.context.can.write) return section;
    const id = uid('reason');
    const reason = h('input', { id, autocomplete: 'off', placeholder: 'why' });
    section.append(h('form', {
      class: 'inline',
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api('PUT', `/v1/contacts/${encodeURIComponent(contact.id)}/restriction`,
            contact.restricted ? { restricted: false } : { restricted: true, reason: reason.value.trim() || 'requested by the customer' });
          this.changed();
        } catch (err) {
          fill(this.status, err.message);
        }
      },
    }, contact.restricted ? null : [h('label', { for: id }, 'Reason'), reason],
    h('button', { type: 'submit' }, contact.restricted ? 'Lift restriction' : 'Restrict processing')));
    return section;
  }

  async loadHistory(contactId) {
    const path = `/v1/contacts/${encodeURIComponent(contactId)}`;
    try {
      const [consent, restriction] = await Promise.all([api('GET', `${path}/consent`), api('GET', `${path}/restriction`)]);
      if (this.shown !== contactId) return;
      const words = (s) => s.replace('_', ' ');
      const restricted = (r) => (r ? 'restricted' : 'not restricted');
      // Re-reads keep an opened history open.
      const section = (name) => ({
        'data-testid': name,
        open: this.opened.has(name),
        ontoggle: (e) => (e.target.open ? this.opened.add(name) : this.opened.delete(name)),
      });
      fill(this.history,
        h('details', section('consent-history'), h('summary', {}, `Consent history (${consent.history.length})`),
          h('ol', { class: 'history' }, consent.history.map((entry) => h('li', {},
            `${when(entry.at)} \u00b7 ${words(entry.previous)} \u2192 ${words(entry.marketing)} \u00b7 ${entry.source} (by ${entry.actor})`)))),
        h('details', section('restriction-history'), h('summary', {}, `Restriction history (${restriction.history.length})`),
          h('ol', { class: 'history' }, restriction.history.map((entry) => h('li', {},
            `${when(entry.at)} \u00b7 ${restricted(entry.previous)} \u2192 ${restricted(entry.restricted)}${entry.reason ? ` \u00b7 ${entry.reason}` : ''} (by ${entry.actor})`)))));
    } catch {
      fill(this.history);
    }
  }

  privacySection(contact) {
    const exportButton = h('button', { type: 'button', 'data-testid': 'export', onclick: () => this.exportContact(contact, exportButton) }, 'Export data');
    const dialog = this.erasureDialog(contact);
    return h('section', { class: 'privacy', 'aria-label': 'Privacy rights' },
      h('h3', {}, 'Privacy'),
      exportButton,
      h('button', { type: 'button', class: 'danger', 'data-testid': 'erase', onclick: () => dialog.showModal() }, 'Erase contact\u2026'),
      dialog);
  }

  async exportContact(contact, button) {
    button.disabled = true;
    try {
      let job = await api('POST', `/v1/contacts/${encodeURIComponent(contact.id)}/export`, {});
      fill(this.receipt, `Export ${job.export_id}: ${job.status}\u2026`);
      job = await untilExported(job);
      fill(this.receipt, job.url
        ? h('p', {}, `Export ${job.export_id} is ready: `, h('a', { href: job.url, rel: 'noopener noreferrer', download: true }, 'download'), ` (link valid ${Math.round((job.url_expires_in ?? 900) / 60)} min)`)
        : h('p', {}, `Export ${job.export_id}: ${job.status}`));
    } catch (e) {
      fill(this.receipt, h('p', { class: 'error' }, `Export failed: ${e.message}`));
    } finally {
      button.disabled = false;
    }
  }

  erasureDialog(contact) {
    const id = uid('confirm');
    const expected = contact.phone || contact.id;
    const confirm = h('input', { id, autocomplete: 'off', 'data-testid': 'erase-confirm' });
    const dialog = h('dialog', { 'aria-labelledby': `${id}-title` },
      h('form', {
        method: 'dialog',
        onsubmit: async (e) => {
          if (e.submitter?.value !== 'erase') return;
          e.preventDefault();
          if (confirm.value.trim() !== expected) {
            confirm.setCustomValidity(`Type ${expected} to confirm`);
            confirm.reportValidity();
            return;
          }
          dialog.close();
          await this.erase(contact);
        },
      },
      h('h3', { id: `${id}-title` }, 'Erase this contact?'),
      h('p', {}, 'Their profile, messages, media, notes and exports are deleted for good. The erasure receipt is kept.'),
      h('label', { for: id }, `Type ${expected} to confirm`),
      confirm,
      h('div', { class: 'dialog-buttons' },
        h('button', { value: 'cancel', formnovalidate: true }, 'Cancel'),
        h('button', { value: 'erase', class: 'danger', 'data-testid': 'erase-go' }, 'Erase'))));
    confirm.addEventListener('input', () => confirm.setCustomValidity(''));
    return dialog;
  }

  async erase(contact) {
    try {
      this.erased = true;
      let receipt = await api('DELETE', `/v1/contacts/${encodeURIComponent(contact.id)}`);
      this.showReceipt(receipt);
      for (let i = 0; i < 60 && receipt.status !== 'completed'; i += 1) {
        await sleep(1000);
        receipt = await api('GET', `/v1/erasures/${encodeURIComponent(receipt.erasure_id)}`);
        this.showReceipt(receipt);
      }
      // The panes re-read: the contact is gone, its receipt stays.
      if (receipt.status === 'completed') this.changed();
    } catch (e) {
      fill(this.receipt, h('p', { class: 'error' }, `Erasure failed: ${e.message}`));
    }
  }

  showReceipt(receipt) {
    const deleted = Object.entries(receipt.deleted || {}).filter(([, n]) => n > 0).map(([kind, n]) => `${n} ${kind.replace(/_/g, ' ')}`);
    fill(this.receipt, h('p', {}, h('strong', {}, `Erasure ${receipt.erasure_id}: ${receipt.status.replace('_', ' ')}`)),
      deleted.length ? h('p', { class: 'muted' }, `Deleted: ${deleted.join(', ')}`) : null);
  }
}
