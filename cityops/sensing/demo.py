"""Demo step ``sensors``: the district's monitoring devices with a quiet day of history.

* a rain gauge at the centre of every village of 义和镇 and of every third village elsewhere;
* at 老沟湾 (太康村 6组), the slope of the signature scenario: three GNSS stations, two crack meters and
  two tilt meters on the houses nearest the place, all linked to the risk point ``SCENARIO_RISK_POINT``;
* waterlogging gauges, construction-site PM10/noise monitors and building energy meters in the town
  centre (汉丰街道, or the first township when it is absent).

Everything is written through the SensorThings writer, and the history through the ingest write path,
so the demo exercises the same code as live devices.
"""

from __future__ import annotations

import math

from shapely.geometry import mapping
from sqlalchemy import select

from cityops.demo.generator import DemoContext, register_step
from cityops.housing import demo as _housing_demo  # noqa: F401  (the "buildings" step this one follows)
from cityops.housing.models import Building
from cityops.identity.scope import Scope
from cityops.org.models import Place, Unit
from cityops.sensing import catalog, ingest, sta
from cityops.sensing.timeutil import now_ms

#: Risk point code of the 老沟湾 slope (text: the warning capability owns the risk point registry).
#: The risk point code of 老沟湾 in the risk-point registry (cityops.warning.demo.SCENARIO_CODE).
SCENARIO_RISK_POINT = "RP-LGW-001"
SCENARIO_PLACE = "老沟湾"
STORM_TOWNSHIP = "义和镇"
OM = sta.OM_MEASUREMENT
HISTORY_HOURS = 24


def _catalogue_entities(writer: sta.Writer) -> dict:
    """One Sensor and one ObservedProperty per device type stream."""
    out = {}
    for key, dtype in catalog.device_types().items():
        sensor = writer.sensor({"name": dtype.sensor, "description": f"{dtype.name_zh} {dtype.name_en}",
                                "encodingType": "text/plain", "metadata": dtype.sensor})
        for spec in dtype.datastreams:
            prop = writer.observed_property({"name": spec.property, "definition": spec.definition,
                                             "description": spec.name_zh})
            out[(key, spec.key)] = (sensor.id, prop.id, spec)
    return out


def add_device(writer: sta.Writer, entities: dict, device_type: str, name: str, unit: Unit, point, *,
               risk_point: str | None = None, building: str | None = None) -> list[int]:
    dtype = catalog.device_types()[device_type]
    props = {"unit_code": unit.code, "device_type": device_type}
    if risk_point:
        props["risk_point_code"] = risk_point
    if building:
        props["building_code"] = building
    thing = writer.thing({"name": name, "description": f"{dtype.name_zh} {name}", "properties": props,
                          "Locations": [{"name": name, "description": "安装位置", "encodingType": sta.GEOJSON,
                                         "location": mapping(point)}]})
    ids = []
    for spec in dtype.datastreams:
        sensor_id, prop_id, _ = entities[(device_type, spec.key)]
        ds = writer.datastream({"name": f"{name} {spec.name_zh}", "description": spec.name_zh,
                                "unitOfMeasurement": spec.unit.model_dump(), "observationType": OM,
                                "properties": {"stream": spec.key}, "Thing": {"@iot.id": thing.id},
                                "Sensor": {"@iot.id": sensor_id}, "ObservedProperty": {"@iot.id": prop_id}})
        ids.append(ds.id)
    return ids


def _quiet_value(device_type: str, stream: str, t_ms: int, k: int, rng) -> float:
    """A plausible quiet-day reading (no rule fires) at ``t_ms``."""
    hour = ((t_ms // 3_600_000) + 8) % 24  # local (UTC+8) hour of the reading
    if device_type == "rain_gauge":
        return round(max(0.0, rng.gauss(0.0, 0.3)), 1)
    if device_type == "gnss":
        return round(5.0 + 0.02 * hour + rng.gauss(0, 0.5), 2)
    if device_type == "crack_meter":
        return round(0.4 + rng.gauss(0, 0.01), 3)
    if device_type == "tilt_meter":
        return round(0.3 + rng.gauss(0, 0.01), 3)
    if device_type == "water_level":
        return 0.0
    if stream == "pm10":
        return round(60 + 20 * math.sin(hour / 24 * 2 * math.pi) + rng.gauss(0, 5), 1)
    if stream == "noise":
        return round((62 if 6 <= hour < 22 else 45) + rng.gauss(0, 2), 1)
    return round(20 + 10 * math.sin(hour / 24 * 2 * math.pi) + k % 5, 2)  # energy, kWh per hour


def step_sensors(ctx: DemoContext) -> None:
    rng = ctx.rng
    with ctx.sessions() as session:
        writer = sta.Writer(sta.Ctx(session, Scope(all_units=True), "", catalogue=True), "demo")
        entities = _catalogue_entities(writer)
        streams: list[tuple[int, str, str]] = []

        def device(device_type, name, unit, point, **kw):
            ids = add_device(writer, entities, device_type, name, unit, point, **kw)
            for ds_id, spec in zip(ids, catalog.device_types()[device_type].datastreams):
                streams.append((ds_id, device_type, spec.key))

        villages = list(session.scalars(select(Unit).where(Unit.level == "village").order_by(Unit.code)))
        storm_town = session.scalar(select(Unit).where(Unit.name == STORM_TOWNSHIP, Unit.level == "township"))
        for i, v in enumerate(villages):
            # Every village of the storm's town, every third elsewhere: a realistic density that keeps the demo fast.
            if (storm_town is not None and v.path.startswith(storm_town.path)) or i % 3 == 0:
                device("rain_gauge", f"{v.name}雨量站", v, v.geom.representative_point())
        place = session.scalar(select(Place).where(Place.name == SCENARIO_PLACE))
        if place is not None:
            host = session.scalar(select(Unit).where(Unit.code == place.unit_code))
            p = place.geom
            for i, (dx, dy) in enumerate(((0.0, 0.0), (0.0015, 0.0008), (-0.0012, 0.001))):
                device("gnss", f"老沟湾GNSS-{i + 1}", host, type(p)(p.x + dx, p.y + dy), risk_point=SCENARIO_RISK_POINT)
            houses = list(session.scalars(select(Building).where(Building.unit_path.startswith(host.path))
                                          .order_by(Building.code).limit(4)))
            for i, b in enumerate(houses):
                kind = "crack_meter" if i < 2 else "tilt_meter"
                label = "裂缝计" if kind == "crack_meter" else "倾斜仪"
                device(kind, f"老沟湾{b.code[-4:]}号房{label}", host, b.footprint.representative_point(),
                       risk_point=SCENARIO_RISK_POINT, building=b.code)
        town = session.scalar(select(Unit).where(Unit.name == "汉丰街道")) or session.scalar(
            select(Unit).where(Unit.level == "township").order_by(Unit.code))
        grids = list(session.scalars(select(Unit).where(Unit.level == "grid", Unit.path.startswith(town.path))
                                     .order_by(Unit.code).limit(10)))
        for i, g in enumerate(grids[:3]):
            device("water_level", f"{town.name}积水点{i + 1}", g, g.geom.representative_point())
        for i, g in enumerate(grids[3:5]):
            device("site_monitor", f"{town.name}工地{i + 1}", g, g.geom.representative_point())
        for i, b in enumerate(session.scalars(select(Building).where(Building.unit_path.startswith(town.path), Building.use == "公共")
                                              .order_by(Building.code).limit(5))):
            device("energy_meter", f"{b.name or b.code}电表", town, b.footprint.representative_point(), building=b.code)
        session.flush()
        # A quiet day of hourly history, through the ingest write path.
        end = (now_ms() // 3_600_000) * 3_600_000
        rows = []
        metas = {}
        for k, (ds_id, device_type, stream) in enumerate(streams):
            metas[ds_id] = ingest.meta_for(session, session.get(sta.Datastream, ds_id))
            for h in range(HISTORY_HOURS):
                t = end - (HISTORY_HOURS - h) * 3_600_000
                rows.append(ingest.Row(ds_id, t, None, None, _quiet_value(device_type, stream, t, k, rng)))
        ingest.write_batch(session, rows, metas)
        session.commit()
    ctx.summary["sensors"] = {"datastreams": len(streams), "observations": len(rows)}


register_step("sensors", step_sensors, after="buildings")
