"""OGC API – Features (Parts 1 and 2) at /ogc over the layer catalogue."""
