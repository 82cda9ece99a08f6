"""The BRAID model of a device: presets (published numbers and the cost model), profiles
(measured or from a preset, saved as JSON) and the phase runner that measures them."""
