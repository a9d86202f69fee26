"""Shared pieces of the API's response models (the JSON shapes routes answer with).

Routes still build their answers as plain dicts (the capabilities' ``*_dict`` / snapshot functions); the
response model names and types every key, so the OpenAPI document shows the shape and FastAPI checks it.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

#: A GeoJSON geometry object (type, coordinates), as stored.
Geometry = dict[str, Any]


class ApiModel(BaseModel):
    """Base of response models. A key the snapshot returns but the model does not declare is an error (a 500,
    which the tests see) rather than silently left out of the answer: the model and the snapshot stay in step.

    A key a snapshot gives only sometimes (a geometry on request, ``masked``, a distance) has a default; routes
    answering such a model set ``response_model_exclude_unset=True`` so that the key stays out when the
    snapshot leaves it out, as before."""

    model_config = ConfigDict(extra="forbid")


class Page(ApiModel, Generic[T]):
    """One page of a longer list: the total over all pages and this page's items (分页)."""

    total: int = Field(description="items over all pages / 总数")
    items: list[T]
