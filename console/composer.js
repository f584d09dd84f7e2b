// The composer: free text while the customer service window is open; outside it only approved
// templates, with one field per parameter, checked as the API checks them before sending.

import { api, query } from './api.js';
import { h, fill, uid } from './dom.js';

let approved = null;
/** The tenant's approved templates (read once per page load, refreshed on demand). */
async function approvedTemplates(refresh = false) {
  if (!approved || refresh) {
    const all = [];
    let page = await api('GET', '/v1/templates?limit=100');
    all.push(...page.items);
    while (page.next_cursor) {
      page = await api('GET', `/v1/templates${query({ limit: 100, cursor: page.next_cursor })}`);
      all.push(...page.items);
    }
    approved = all.filter((t) => t.status === 'APPROVED' && t.parameters);
  }
  return approved;
}

/**
 * The parameter fields a template takes: its text header's and body's placeholders and its
 * buttons' suffixes or codes. `null` when it needs something the console cannot give (a media
 * or location header, carousel cards): such templates are listed but not offered for sending.
 */
export function parameterFields(template) {
  const p = template.parameters;
  if (!p || (p.cards && p.cards.length)) return null;
  const fields = [];
  if (p.header) {
    if (p.header.kind !== 'text') return null;
    for (const name of p.header.params) fields.push({ part: 'header', name, label: `Header {{${name}}}`, slot: p.header });
  }
  for (const name of p.body.params) fields.push({ part: 'body', name, label: `{{${name}}}`, slot: p.body });
  for (const button of p.buttons || []) {
    const kind = button.kind?.kind ?? button.kind;
    if ((kind === 'url' && button.kind.dynamic) || kind === 'copy_code' || kind === 'otp') {
      fields.push({ part: 'button', name: String(button.index), label: `Button ${button.index + 1} ${kind === 'url' ? 'link ending' : 'code'}`, button, kind });
    }
  }
  return fields;
}

/** Problems with the values (field name → message), as the API would find them. */
export function checkParameters(fields, values) {
  const problems = {};
  const slotLength = new Map();
  for (const field of fields) {
    const value = values[`${field.part}:${field.name}`] ?? '';
    const key = `${field.part}:${field.name}`;
    if (!value.trim()) {
      problems[key] = 'needs a value';
      continue;
    }
    if (field.part !== 'button' && /[\n\t]| {5,}/.test(value)) {
      problems[key] = 'no new lines, tabs or more than four spaces in a row';
    }
    if (field.kind === 'copy_code' && value.length > 15) problems[key] = 'at most 15 characters';
    if (field.slot) slotLength.set(field.slot, (slotLength.get(field.slot) ?? field.slot.fixed_chars) + value.length);
  }
  for (const [slot, length] of slotLength) {
    if (length > slot.max_chars) {
      const first = fields.find((f) => f.slot === slot);
      problems[`${first.part}:${first.name}`] = `the text would be ${length} characters; at most ${slot.max_chars}`;
    }
  }
  return problems;
}

/** The send's `components`, in Meta's form. */
export function components(template, fields, values) {
  const named = template.parameter_format === 'NAMED';
  const text = (field) => {
    const parameter = { type: 'text', text: values[`${field.part}:${field.name}`] };
    if (named) parameter.parameter_name = field.name;
    return parameter;
  };
  const out = [];
  const header = fields.filter((f) => f.part === 'header');
  if (header.length) out.push({ type: 'header', parameters: header.map(text) });
  const bodyFields = fields.filter((f) => f.part === 'body');
  if (bodyFields.length) out.push({ type: 'body', parameters: bodyFields.map(text) });
  for (const f of fields.filter((f) => f.part === 'button')) {
    const value = values[`${f.part}:${f.name}`];
    out.push(f.kind === 'copy_code'
      ? { type: 'button', sub_type: 'copy_code', index: f.button.index, parameters: [{ type: 'coupon_code', coupon_code: value }] }
      : { type: 'button', sub_type: 'url', index: f.button.index, parameters: [{ type: 'text', text: value }] });
  }
  return out;
}

export class Composer {
  constructor(context, { conversation, contact, onSent }) {
    this.context = context;
    this.conversation = conversation;
    this.contact = contact;
    this.onSent = onSent;
  }

  element() {
    this.error = h('div', { class: 'error', role: 'alert', 'data-testid': 'composer-error' });
    this.el = h('div', { class: 'composer', 'data-testid': 'composer' });
    const open = this.conversation?.window_open;
    if (this.contact?.restricted) {
      fill(this.el, h('p', { class: 'muted' }, 'Processing of this contact is restricted: nothing can be sent.'));
      return this.el;
    }
    this.el.append(open ? this.textForm() : h('p', { class: 'muted' }, 'The 24-hour window is closed: only an approved template can start the conversation again.'),
      this.templatePicker(!open), this.error);
    return this.el;
  }

  base() {
    const send = { contact_id: this.contact.id };
    if (this.conversation) send.from = this.conversation.number;
    return send;
  }

  async send(message) {
    fill(this.error);
    try {
      await api('POST', '/v1/messages', { ...this.base(), ...message });
      this.onSent();
      return true;
    } catch (e) {
      const details = (e.details?.errors || []).map((x) => h('li', {}, `${x.field || ''} ${x.message || ''}`.trim()));
      fill(this.error, e.message, details.length ? h('ul', {}, details) : null);
      return false;
    }
  }

  textForm() {
    const id = uid('reply');
    const text = h('textarea', { id, name: 'body', rows: 2, maxlength: 4096, required: true, 'data-testid': 'reply-text' });
    const form = h('form', {
      class: 'reply',
      onsubmit: async (e) => {
        e.preventDefault();
        const value = text.value.trim();
        if (!value) return;
        if (await this.send({ type: 'text', text: { body: value } })) text.value = '';
      },
    }, h('label', { for: id }, 'Reply'), text, h('button', { type: 'submit', class: 'primary', 'data-testid': 'send' }, 'Send'));
    text.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit();
    });
    return form;
  }

  templatePicker(expanded) {
    const details = h('details', { class: 'templates', open: expanded, 'data-testid': 'template-picker' },
      h('summary', {}, 'Send a template'));
    const area = h('div', {}, h('p', { class: 'muted' }, 'Loading templates\u2026'));
    details.append(area);
    approvedTemplates().then((templates) => this.renderTemplates(area, templates),
      (e) => fill(area, h('p', { class: 'error' }, `Templates could not be loaded: ${e.message}`)));
    return details;
  }

  renderTemplates(area, templates) {
    const usable = templates.filter((t) => parameterFields(t) !== null);
    if (!usable.length) {
      fill(area, h('p', { class: 'muted' }, 'No approved template the console can fill. Create and approve one first.'));
      return;
    }
    const id = uid('template');
    const pick = h('select', { id, 'data-testid': 'template-select' },
      usable.map((t, i) => h('option', { value: String(i) }, `${t.name} (${t.language}, ${t.category.toLowerCase()})`)));
    const fieldsArea = h('div', { class: 'template-fields' });
    const form = h('form', { class: 'template-form' },
      h('label', { for: id }, 'Template'), pick, fieldsArea,
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'send-template' }, 'Send template'));
    const show = () => {
      const template = usable[Number(pick.value)];
      const fields = parameterFields(template);
      const inputs = fields.map((field) => {
        const inputId = uid('param');
        const input = h('input', { id: inputId, name: `${field.part}:${field.name}`, autocomplete: 'off', 'aria-describedby': `${inputId}-problem` });
        return { field, input, row: h('div', { class: 'field' }, h('label', { for: inputId }, field.label), input, h('span', { id: `${inputId}-problem`, class: 'error' })) };
      });
      const body = template.components?.find?.((c) => c.type === 'BODY')?.text;
      fill(fieldsArea, body ? h('p', { class: 'template-text' }, body) : null, inputs.map((i) => i.row));
      form.onsubmit = async (e) => {
        e.preventDefault();
        const values = Object.fromEntries(inputs.map(({ input }) => [input.name, input.value]));
        const problems = checkParameters(fields, values);
        for (const { input, row } of inputs) {
          const problem = problems[input.name] || '';
          fill(row.lastElementChild, problem);
          input.toggleAttribute('aria-invalid', Boolean(problem));
        }
        if (Object.keys(problems).length) return;
        const message = { type: 'template', template: { name: template.name, language: { code: template.language } } };
        const parts = components(template, fields, values);
        if (parts.length) message.template.components = parts;
        if (await this.send(message)) inputs.forEach(({ input }) => { input.value = ''; });
      };
    };
    pick.onchange = show;
    fill(area, form);
    show();
  }
}
