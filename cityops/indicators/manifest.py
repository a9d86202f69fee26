"""Indicators (指标): nothing on the bus yet (cityops.core.bus). Capabilities contribute metrics through the
contract module ``cityops.indicators.metrics``; a breach opens a case through the event center's service."""

from cityops.core.bus import Manifest

MANIFEST = Manifest("indicators", depends_on=("org", "identity", "events"))
