"""Page-numbered listings, as Dify's APIs return them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    page: int
    limit: int

    @property
    def has_more(self) -> bool:
        return self.page * self.limit < self.total

    def as_json(self, items: list[Any]) -> dict[str, Any]:
        """Dify's page body, with `items` in place of the rows."""
        return {
            "data": items,
            "has_more": self.has_more,
            "limit": self.limit,
            "total": self.total,
            "page": self.page,
        }


async def paginate(db: AsyncSession, query: Select[Any], page: int, limit: int) -> Page[Any]:
    """Page `page` (from 1) of `limit` rows of an ordered query, and the total count."""
    counted = select(func.count()).select_from(query.order_by(None).subquery())
    total = (await db.execute(counted)).scalar_one()
    rows = await db.execute(query.offset((page - 1) * limit).limit(limit))
    return Page(list(rows.scalars()), total, page, limit)
