"""The training engine: config in, run out, events all the way. Never prints, never imports
IPython. Import its modules directly; ``import nbtrain`` does not load them."""
