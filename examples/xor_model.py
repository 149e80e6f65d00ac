"""The seed's XOR network as a user would write it in torch: ``handgrad check examples/xor_model.py:make --lr 2``.

``make()`` returns the 2-3-1 sigmoid network with the weights ``handgrad compare xor`` starts from
(its seeded defaults, written out), and the XOR truth table; with xor's η (squared error, online
SGD, ``--lr 2``, 1000 steps) the run is the xor scenario's, number for number.
"""

import torch

WEIGHTS = {
    "0.weight": [
        [0.19369307573550387, -0.32557075163361393],
        [-0.6491614679377623, -0.6837331748681422],
        [0.4430310209648889, 0.5837245353312901],
    ],
    "0.bias": [0.15080576032412196, 0.32455714906155464, 0.061695054588811526],
    "2.weight": [[0.5023783619817018, 0.36471626899313325, -0.5741881215688042]],
    "2.bias": [0.4126949105947133],
}
INPUTS = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
TARGETS = [[0.0], [1.0], [1.0], [0.0]]


def make():
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()
    ).double()
    model.load_state_dict({key: torch.tensor(value, dtype=torch.float64) for key, value in WEIGHTS.items()})
    return model, torch.tensor(INPUTS, dtype=torch.float64), torch.tensor(TARGETS, dtype=torch.float64)
