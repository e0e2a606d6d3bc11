"""What routes take from the running app, as named `Annotated` dependencies."""

# No `from __future__ import annotations`: FastAPI reads these aliases at run time.

from typing import Annotated

from fastapi import Depends, Request

from qa.collection import Collection


def get_collection(request: Request) -> Collection:
    """The collection the lifespan opened (one per worker process)."""
    return request.app.state.collection  # type: ignore[no-any-return]


CollectionDep = Annotated[Collection, Depends(get_collection)]
