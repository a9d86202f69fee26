"""Demo step ``link_sensors``: the demo's risk points (warning) read the demo's datastreams (sensing). It assembles
two capabilities, as every demo step may."""

from __future__ import annotations

import numpy as np
from shapely.geometry import Point, shape
from sqlalchemy import select

from cityops.demo.generator import DemoContext, register_step


def step_link_sensors(ctx: DemoContext) -> None:
    """Link each risk point to the demo's datastreams: its own GNSS and tilt meters (things carrying its
    code) and the nearest rain gauge. Their levels stay those of the replayed July history until the next
    observations arrive."""
    from cityops.sensing.models import Datastream, Location, Thing, ThingLocation
    from cityops.warning.tables import RiskPoint

    with ctx.sessions() as session:
        streams: dict[int, list[int]] = {}
        for thing_id, ds_id in session.execute(select(Datastream.thing_id, Datastream.id).order_by(Datastream.id)):
            streams.setdefault(thing_id, []).append(ds_id)
        things = session.execute(select(Thing.id, Thing.device_type, Thing.risk_point_code, Thing.building_code)).all()
        where = {tid: shape(loc) for tid, loc in session.execute(
            select(ThingLocation.thing_id, Location.location).join(Location, Location.id == ThingLocation.location_id))}
        gauges = [(where[t.id], streams[t.id][0]) for t in things
                  if t.device_type == "rain_gauge" and t.id in where and streams.get(t.id)]
        if not gauges:
            return
        gauge_xy = np.array([[g.x, g.y] for g, _ in gauges])
        for rp in session.scalars(select(RiskPoint)):
            point: Point = rp.geom
            nearest = int(np.argmin(((gauge_xy - [point.x, point.y]) ** 2).sum(axis=1)))
            links = {"rainfall": gauges[nearest][1]}
            own = [t for t in things if t.risk_point_code == rp.code and streams.get(t.id)]
            if gnss := [streams[t.id][0] for t in own if t.device_type == "gnss"]:
                links["displacement"] = gnss
            if tilt := [{"id": streams[t.id][0], "building_code": t.building_code} for t in own if t.device_type == "tilt_meter"]:
                links["tilt"] = tilt
            rp.datastreams = links
        session.commit()


register_step("link_sensors", step_link_sensors)
