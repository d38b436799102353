"""`!function` helpers for the example lm-eval tasks (lm-eval imports this file by path)."""


def strip_texts(dataset):
    return dataset.map(lambda doc: {"text": doc["text"].strip()})
