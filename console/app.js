// The console's entry: sign-in, the three panes (inbox, conversation, contact), hash routes
// (#/c/<conversation id>, #/contact/<contact id>) and live updates from the event stream.

import { api, session, whenSignedOut } from './api.js';
import { h, fill } from './dom.js';
import { Inbox } from './inbox.js';
import { ConversationPane } from './conversation.js';
import { ContactPane } from './contact.js';
import { LiveEvents } from './live.js';
import { BroadcastsView } from './broadcasts.js';

const ROLE_RANK = { viewer: 0, agent: 1, admin: 2 };
const root = document.getElementById('app');

/** What the signed-in key may do, from GET /v1/me. */
export function abilities(me) {
  const rank = ROLE_RANK[me.role] ?? 0;
  return { write: rank >= 1, admin: rank >= 2 };
}

async function boot() {
  whenSignedOut(() => signOut('Your key no longer works. Sign in again.'));
  const code = new URLSearchParams(location.hash.slice(1)).get('signin');
  if (code) {
    // A sign-in link: trade its one-time code for a session key, then drop it from the URL.
    history.replaceState(null, '', location.pathname);
    try {
      const created = await api('POST', '/v1/sessions', { code }, { key: '' });
      session.set(created.api_key);
    } catch (e) {
      return showSignIn(`That sign-in link did not work: ${e.message}`);
    }
  }
  if (!session.key()) return showSignIn();
  try {
    // Who the key is goes out with the first screen's reads, not before them.
    await start(api('GET', '/v1/me'));
  } catch (e) {
    session.clear();
    showSignIn(e.status === 401 ? 'That key was not accepted.' : e.message);
  }
}

function showSignIn(message) {
  const input = h('input', {
    id: 'api-key', type: 'password', name: 'api-key', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'signin-help',
  });
  const error = h('p', { class: 'error', role: 'alert' }, message || '');
  const form = h('form', {
    class: 'signin',
    onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      try {
        const me = await api('GET', '/v1/me', undefined, { key });
        session.set(key);
        await start(me);
      } catch (e) {
        fill(error, e.status === 401 ? 'That key was not accepted.' : e.message);
        input.focus();
      }
    },
  },
  h('h1', {}, 'WhatsApp CRM'),
  h('label', { for: 'api-key' }, 'API key'),
  input,
  h('p', { id: 'signin-help', class: 'muted' },
    'Paste a user\u2019s API key, or open a link from ', h('code', {}, 'crmctl user login'),
    '. The key stays in this tab only.'),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  error);
  fill(root, h('main', { id: 'main', class: 'signin-page' }, form));
  input.focus();
}

let live = null;
let inbox = null;
let broadcasts = null;
let conversation = null;

function signOut(message) {
  // The first screen's reads fail together with a refused key: sign out once.
  if (!session.key()) return;
  live?.stop();
  live = null;
  broadcasts?.stop();
  session.clear();
  showSignIn(message);
}

/** Shows the three panes; `whoami` is GET /v1/me's answer or the request still under way. */
async function start(whoami) {
  // One round trip for everything the first screen needs: who the key is, the numbers and
  // the inbox page at once. The event log's head and the user list are read beside them but
  // not waited for: the inbox shows without them (assignees show their names once known).
  live?.stop();
  const current = new LiveEvents((events) => {
    inbox.refreshSoon();
    conversation.onEvents(events);
  });
  live = current;
  const liveStarted = current.start();
  liveStarted.catch(() => {}); // handled below, once the screen exists
  const usersRead = api('GET', '/v1/users?limit=100').catch(() => ({ items: [] }));
  let me, numbers, firstPage;
  try {
    [me, numbers, firstPage] = await Promise.all([whoami, api('GET', '/v1/numbers?limit=100'), Inbox.firstPage()]);
  } catch (e) {
    current.stop();
    throw e;
  }
  const context = {
    me,
    can: abilities(me),
    numbers: numbers.items ?? numbers,
    users: [],
    // Rows show assignees' names once the users are known (the inbox is drawn again then);
    // the conversation pane waits for them (its assignee picker lists them).
    usersKnown: usersRead.then((users) => {
      context.users = users.items ?? [];
      if (live === current) inbox.render();
    }),
    userName(id) {
      if (!id) return 'nobody';
      if (me.user && me.user.id === id) return 'you';
      const user = this.users.find((u) => u.id === id || u.user_id === id);
      return user ? user.name || user.email || id : id;
    },
  };
  const inboxEl = h('section', { class: 'pane inbox', 'aria-label': 'Inbox' });
  const conversationEl = h('section', { class: 'pane conversation', 'aria-label': 'Conversation' });
  const contactEl = h('aside', { class: 'pane contact', 'aria-label': 'Contact' });
  const broadcastsEl = h('section', { class: 'broadcasts-pane', 'aria-label': 'Broadcasts' });
  const who = me.user ? me.user.name || me.user.email || me.user.id : 'integration key';
  fill(root,
    h('header', { class: 'top' },
      h('span', { class: 'brand' }, me.tenant.name),
      h('nav', { 'aria-label': 'Views' },
        h('a', { href: '#/', 'data-testid': 'nav-inbox' }, 'Inbox'),
        h('a', { href: '#/broadcasts', 'data-testid': 'nav-broadcasts' }, 'Broadcasts')),
      h('span', { class: 'who', 'data-testid': 'who' }, `${who} \u00b7 ${me.role}`),
      h('button', { type: 'button', class: 'link', onclick: () => signOut('Signed out.') }, 'Sign out')),
    h('main', { id: 'main' }, h('div', { class: 'panes' }, inboxEl, conversationEl, contactEl), broadcastsEl));

  const contact = new ContactPane(contactEl, context);
  conversation = new ConversationPane(conversationEl, context, contact);
  inbox = new Inbox(inboxEl, context);
  broadcasts?.stop();
  broadcasts = new BroadcastsView(broadcastsEl, context);
  const route = () => {
    const [, , broadcastId] = location.hash.match(/^#\/broadcasts(\/(.+))?$/) || [];
    if (/^#\/broadcasts/.test(location.hash)) {
      document.body.dataset.view = 'broadcasts';
      broadcasts.show(broadcastId ? decodeURIComponent(broadcastId) : null);
      return;
    }
    broadcasts.stop();
    const [, kind, id] = location.hash.match(/^#\/(c|contact)\/(.+)$/) || [];
    document.body.dataset.view = kind ? 'conversation' : 'inbox';
    inbox.select(kind === 'c' ? decodeURIComponent(id) : null);
    if (kind === 'c') conversation.openConversation(decodeURIComponent(id));
    else if (kind === 'contact') conversation.openContact(decodeURIComponent(id));
    else conversation.close();
  };
  window.onhashchange = route;
  inbox.show(firstPage);
  route();
  // The page and the log's head were read at once: once the head is known, re-read the page,
  // so nothing that landed between the two is missed until the next event. A head that could
  // not be read is asked for again (a refused key signs out through the API client).
  const followLive = (started) => started.then(() => inbox.refreshSoon(), () => {
    if (!current.stopped) setTimeout(() => followLive(current.start()), 5000);
  });
  followLive(liveStarted);
}

boot();
