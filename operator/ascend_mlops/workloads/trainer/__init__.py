"""`ascend-mlops train`: the image classifier a TrainingJob's pods run.

It replaces ModelArts' subscribed ResNet_v1_50 algorithm (and its siblings
ResNet_v1_101 and MobileNet_v1): it reads a folder-per-class dataset, trains
with TensorFlow (multi-worker when `TF_CONFIG` is set), and publishes a
versioned output (`<output>/V001/...`) whose frozen graph is what ATC converts.

Only `cli`, `params`, `dataset`, `versions`, `progress`, `evaluation` and
`distribute` are importable without TensorFlow, so that invalid input is
reported in a second; the modules that train and export import it.
"""
