"""`ascend-mlops convert`: a TensorFlow frozen graph to an Ascend .om model with ATC.

`templates` holds the named conversion templates, `options` the one table that
maps each template option to ATC flags and builds the exact ATC argument list,
`runner` finds and runs ATC (or, opt-in, the ATC simulator), and `cli` ties
them together for the ModelConversion pod.
"""
