"""A1111's `modules` package, as extensions import it: thin views onto the running server's objects (see
`webui.extensions.a1111.runtime`), never a second engine."""

if __name__ != "modules":  # imported as webui.extensions.a1111.modules: classes would exist twice
    raise ImportError("import A1111's compatibility package by its own name (`import modules.scripts`), after "
                      "webui.extensions.host.ensure_compat_importable(); not as webui.extensions.a1111.modules")
