"""Model-side helpers of the adapt, motion and render stages: the shared model runtime, dubbing of
presenter footage, and fitting the generator to a presenter's footage."""
