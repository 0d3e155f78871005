"""Name -> module registries, so that a config string leads straight to the code it selects."""


class Registry(dict):
    """A dict of named modules with a ``register`` decorator.

    Example::

        BACKBONES = Registry("BACKBONES")

        @BACKBONES.register("R-50-FPN")
        def build_resnet_fpn_backbone(cfg): ...

        BACKBONES.register("R-101-FPN", build_resnet_fpn_backbone)  # or as a call

    Looking up an unknown name raises a KeyError that lists the registered names.
    """

    def __init__(self, name="registry", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name

    def register(self, module_name, module=None):
        if module is not None:
            self._register(module_name, module)
            return module

        def decorator(fn):
            self._register(module_name, fn)
            return fn

        return decorator

    def _register(self, module_name, module):
        if module_name in self:
            raise KeyError(f"{self.name}: '{module_name}' is already registered (as {self[module_name]!r})")
        self[module_name] = module

    def __missing__(self, key):
        known = ", ".join(sorted(self)) or "none"
        raise KeyError(f"{self.name}: no entry named '{key}'. Registered: {known}")
