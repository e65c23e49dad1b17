"""``ECSOQueryEngine``: any query engine, with the ECSO decision of its answer in ``Response.metadata``."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import RESPONSE_TYPE, AsyncStreamingResponse, StreamingResponse
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from ._decisions import Collected, collecting

__all__ = ["ECSOQueryEngine"]


class ECSOQueryEngine(BaseQueryEngine):
    """Wraps a query engine whose LLM is an ``ECSOMultiModalLLM`` and shows the guard's decision.

    LlamaIndex's synthesizers keep only the text of the LLM's reply, so the ``additional_kwargs["ecso"]``
    of each guarded call never reaches the ``Response``. Like ``TransformQueryEngine`` and
    ``RetryQueryEngine``, this wraps any query engine (``index.as_query_engine(llm=guarded)``,
    ``RetrieverQueryEngine``, ``SubQuestionQueryEngine``, ...) and adds to ``Response.metadata``:

    - ``"ecso"``: the client summary of the last guarded call, the one that wrote the answer (refine and
      tree-summarize modes call the LLM several times, last for the final answer); None when no guarded
      call was made (nothing retrieved, or an LLM that is not an ``ECSOMultiModalLLM``).
    - ``"ecso_calls"``: the client summaries of every guarded call of the query, in order.

    These are the same dicts as ``ChatResponse.additional_kwargs["ecso"]``: the decision and how it was
    reached, never withheld text (a flagged first answer, captions, the judge's reply). Streaming
    responses get them once their stream has been read to the end (the guard decides before the first
    token; the decision is known when the stream ends). Source nodes are left as they are: their
    metadata belongs to the index (a decision written there would be stored and sent to the LLM with the
    node's content in later queries).

    Errors are raised, not swallowed: LlamaIndex's refine synthesizers catch ``ValueError`` (meant for
    structured-output parsing) and answer "Empty Response", which would hide the guard's input errors
    (``ImageError``, ``MessageError``: an image refused by policy, an image file read as text). The
    first ``ECSOError`` a guarded call raised during the query is raised here even if the wrapped engine
    carried on without it.

    Args:
        query_engine: the query engine to wrap.
        callback_manager: LlamaIndex callback manager (default: the wrapped engine's).

    """

    def __init__(self, query_engine: BaseQueryEngine, callback_manager: CallbackManager | None = None) -> None:
        self._query_engine = query_engine
        super().__init__(callback_manager or query_engine.callback_manager)

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._query_engine}

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """The wrapped engine's retrieval."""
        return self._query_engine.retrieve(query_bundle)

    def synthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
    ) -> RESPONSE_TYPE:
        """The wrapped engine's synthesis over given nodes, with the decision in its metadata."""
        collected = Collected()
        with collecting(collected):
            response = self._query_engine.synthesize(
                query_bundle, nodes, additional_source_nodes=additional_source_nodes
            )
        return _reported(response, collected)

    async def asynthesize(
        self,
        query_bundle: QueryBundle,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
    ) -> RESPONSE_TYPE:
        """Async :meth:`synthesize`."""
        collected = Collected()
        with collecting(collected):
            response = await self._query_engine.asynthesize(
                query_bundle, nodes, additional_source_nodes=additional_source_nodes
            )
        return _reported(response, collected)

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        collected = Collected()
        with collecting(collected):
            response = self._query_engine.query(query_bundle)
        return _reported(response, collected)

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        collected = Collected()
        with collecting(collected):
            response = await self._query_engine.aquery(query_bundle)
        return _reported(response, collected)


def _reported(response: RESPONSE_TYPE, collected: Collected) -> RESPONSE_TYPE:
    """Put the decisions in ``response.metadata`` now, or when its stream ends; raise a swallowed error."""
    _raise_swallowed(collected)
    if response.metadata is None:
        response.metadata = {}
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        response.response_gen = _stream(response.response_gen, collected, response.metadata)
    elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
        response.response_gen = _astream(response.response_gen, collected, response.metadata)
    else:
        _report(response.metadata, collected)
    return response


def _raise_swallowed(collected: Collected) -> None:
    if collected.errors:
        raise collected.errors[0]


def _report(metadata: dict[str, Any], collected: Collected) -> None:
    _raise_swallowed(collected)
    calls = collected.calls
    metadata["ecso"] = calls[-1] if calls else None
    metadata["ecso_calls"] = list(calls)


def _stream(tokens: Generator[str, None, None], collected: Collected, metadata: dict[str, Any]) -> Any:
    """Yield the tokens, collecting the calls made while each is produced; report at the end."""
    while True:
        with collecting(collected):
            try:
                token = next(tokens)
            except StopIteration:
                break
        yield token
    _report(metadata, collected)


async def _astream(tokens: AsyncGenerator[str, None], collected: Collected, metadata: dict[str, Any]) -> Any:
    """Async :func:`_stream`."""
    while True:
        with collecting(collected):
            try:
                token = await anext(tokens)
            except StopAsyncIteration:
                break
        yield token
    _report(metadata, collected)
