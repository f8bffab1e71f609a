// The demo's project board, in memory: columns and cards. No Herald here —
// server.js publishes what changes.

'use strict';

const COLUMNS = [
  { id: 'todo', title: 'To do' },
  { id: 'doing', title: 'In progress' },
  { id: 'review', title: 'Review' },
  { id: 'done', title: 'Done' },
];

const SEED = [
  ['Write the launch announcement', 'alice', 'todo'],
  ['Record the product video', 'bob', 'todo'],
  ['Update the pricing page', 'carol', 'todo'],
  ['Fix the login redirect', 'bob', 'doing'],
  ['Press kit', 'alice', 'doing'],
  ['Onboarding emails', 'carol', 'review'],
  ['Set up the status page', 'carol', 'done'],
];

class Board {
  constructor({ projectId, name, members }) {
    this.projectId = projectId;
    this.name = name;
    this.members = [...members];
    this.columns = COLUMNS.map((c) => ({ ...c }));
    this.cards = [];
    this.nextId = 1;
    this.version = 0;
    for (const [title, assignee, column] of SEED) this.add({ title, assignee, column });
    this.version = 0;
  }

  snapshot() {
    return {
      project: { id: this.projectId, name: this.name, members: this.members },
      columns: this.columns,
      cards: this.cards,
      version: this.version,
    };
  }

  card(id) {
    return this.cards.find((c) => c.id === id) || null;
  }

  add({ title, assignee = null, column = 'todo' }) {
    title = String(title || '')
      .trim()
      .slice(0, 120);
    if (!title) throw httpError(400, 'a card needs a title');
    if (!this.columns.some((c) => c.id === column)) throw httpError(400, `no column ${column}`);
    if (assignee && !this.members.includes(assignee)) throw httpError(400, `${assignee} is not on this project`);
    const card = { id: `c${this.nextId++}`, title, assignee: assignee || null, column };
    this.cards.push(card);
    this.version++;
    return card;
  }

  /** Moves a card to `column` (at the end). Returns `{ card, from }`. */
  move(id, column) {
    const card = this.card(id);
    if (!card) throw httpError(404, `no card ${id}`);
    if (!this.columns.some((c) => c.id === column)) throw httpError(400, `no column ${column}`);
    const from = card.column;
    card.column = column;
    // keep column order = insertion order: moved card goes last
    this.cards.splice(this.cards.indexOf(card), 1);
    this.cards.push(card);
    this.version++;
    return { card, from };
  }

  columnTitle(id) {
    const c = this.columns.find((x) => x.id === id);
    return c ? c.title : id;
  }
}

function httpError(status, message) {
  return Object.assign(new Error(message), { status });
}

module.exports = { Board, COLUMNS, httpError };
