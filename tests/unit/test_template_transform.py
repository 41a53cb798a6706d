"""Where a template renders: on the event loop when its work is bounded by its size, in a worker
thread when it loops or calls; with the same limits either way."""

from __future__ import annotations

import threading

import pytest

from tusk.workflow.nodes import template_transform
from tusk.workflow.nodes.template_transform import (
    TemplateRenderError,
    compile_template,
    render,
)


@pytest.mark.parametrize(
    ("source", "in_thread"),
    [
        ("Hello {{ name | upper }}, {{ user.city or 'nowhere' }}", False),
        ("{% if n > 1 %}many{% else %}one{% endif %}", False),
        ("{% for i in items %}{{ i }}{% endfor %}", True),
        ("{{ items | map('upper') | join(',') }}", False),
        ("{{ name.upper() }}", True),
        ("{% macro m() %}x{% endmacro %}{{ m() }}", True),
        ("{% filter upper %}{{ name }}{% endfilter %}", True),
    ],
)
def test_templates_that_loop_or_call_render_in_a_thread(source: str, in_thread: bool) -> None:
    assert compile_template(source).in_thread is in_thread


@pytest.mark.parametrize("source", ["{{ name }}!", "{% for c in name %}{{ c }}{% endfor %}!"])
async def test_both_ways_render_the_same_where_they_should(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    original = template_transform.render_template

    def spying(*args: object, **kwargs: object) -> str:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(template_transform, "render_template", spying)
    compiled = compile_template(source)
    assert await render(compiled, {"name": "Ada"}) == "Ada!"
    on_loop = threads == [threading.main_thread().name]
    assert on_loop is not compiled.in_thread


async def test_the_output_limit_holds_on_the_loop() -> None:
    compiled = compile_template("{{ text }}")
    assert not compiled.in_thread
    with pytest.raises(TemplateRenderError, match="longer than"):
        await render(compiled, {"text": "x" * (template_transform.MAX_OUTPUT_CHARS + 1)})
