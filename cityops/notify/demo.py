"""Demo step "notify": the demo's users are the people they stand for (their inbox is that person's), and a few
people have channel preferences and quiet hours, so the timeline shows them at work."""

from __future__ import annotations

from sqlalchemy import select

from cityops.core import audit
from cityops.demo.generator import DemoContext, register_step
from cityops.identity.models import User
from cityops.notify.models import Preference
from cityops.org.models import Person, Unit

#: demo user → (post, the unit it stands in: its first scope unit; the district for department staff)
POSTS = {"district": "operator", "leader": "leader", "yihe": "operator", "taikang": "village_cadre",
         "gridworker": "grid_worker", "laogouwan": "grid_worker"}


def step_notify(ctx: DemoContext) -> None:
    with ctx.sessions() as session:
        linked = 0
        for user in session.scalars(select(User).where(User.username.in_(list(POSTS)))):
            if not user.scope_units:
                continue
            unit = session.scalar(select(Unit).where(Unit.code == user.scope_units[0]))
            person = session.scalar(select(Person).where(Person.unit_code == unit.code, Person.post == POSTS[user.username])
                                    .order_by(Person.id).limit(1))
            if person is not None:
                user.person_id = person.id
                linked += 1
        # The district's leader keeps quiet hours at night (a red warning still reaches him at once); grid
        # workers are reached on their phones first.
        for person in session.scalars(select(Person).where(Person.post == "leader").order_by(Person.id).limit(1)):
            session.merge(Preference(person_id=person.id, channels=["inapp", "webpush", "sms"], quiet_start="23:00", quiet_end="06:30"))
        audit.record(session, audit.SYSTEM, "demo.notify", "user", "*", after={"linked": linked})
        session.commit()
    ctx.summary["notify_linked_users"] = linked


register_step("notify", step_notify, after="users")
