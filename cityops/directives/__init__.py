"""一键智达 · 一贯到底 directives: a leader or duty operator issues a directive to units, posts or departments;
each receiving unit confirms receipt, reports execution and may pass it down; a live receipt board shows level
by level who has read, confirmed and reported (一览无余), with reminders and escalation for the silent ones."""
