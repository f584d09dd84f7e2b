// Live updates: the tenant's event stream polled from the position last read. Events only say
// *that* something changed; the panes then re-read the API, so a missed poll (a sleeping
// laptop, a dropped network) loses nothing and a repeated event doubles nothing.

import { api, query } from './api.js';

const VISIBLE_MS = 2000;
const HIDDEN_MS = 20000;

export class LiveEvents {
  constructor(onEvents) {
    this.onEvents = onEvents;
    this.after = null;
    this.timer = null;
    this.stopped = false;
    this.wake = () => this.pollNow();
    document.addEventListener('visibilitychange', this.wake);
    window.addEventListener('online', this.wake);
    window.addEventListener('focus', this.wake);
  }

  /** Starts at the head of the log: the panes load the current state themselves. */
  async start() {
    const head = await api('GET', '/v1/events?after=latest&limit=1');
    this.after = head.next_after;
    this.schedule();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    document.removeEventListener('visibilitychange', this.wake);
    window.removeEventListener('online', this.wake);
    window.removeEventListener('focus', this.wake);
  }

  schedule() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.pollNow(), document.hidden ? HIDDEN_MS : VISIBLE_MS);
  }

  async pollNow() {
    if (this.stopped || this.polling) return;
    this.polling = true;
    clearTimeout(this.timer);
    try {
      const events = [];
      let page = await api('GET', `/v1/events${query({ after: this.after, limit: 100 })}`);
      events.push(...page.items);
      while (page.next_cursor) {
        page = await api('GET', `/v1/events${query({ cursor: page.next_cursor, limit: 100 })}`);
        events.push(...page.items);
      }
      this.after = page.next_after;
      if (events.length) this.onEvents(events);
    } catch {
      // Offline or throttled: the next poll resumes from the same position.
    } finally {
      this.polling = false;
      this.schedule();
    }
  }
}
