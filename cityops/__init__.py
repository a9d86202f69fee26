"""CityOps: a city operation and governance center (城市运行和治理中心, "city brain")."""

__version__ = "0.1.0"
