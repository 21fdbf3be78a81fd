"""Helpers for reading what a page rendered under streamlit.testing.v1.AppTest."""


def chart_specs(at) -> list[str]:
    """The Vega-Lite spec (JSON text) of every Altair chart on the page, in order."""
    specs = []

    def walk(node):
        children = getattr(node, "children", None)
        for child in children.values() if isinstance(children, dict) else []:
            walk(child)
        if getattr(node, "type", "") == "vega_lite_chart":
            specs.append(node.proto.spec)

    walk(at._tree)
    return specs
