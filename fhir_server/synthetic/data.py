"""Word lists for synthetic identities and laboratories. Invented people only; places are real
communes (INSEE COG codes) so that birth places and NIRs look like real ones."""
from __future__ import annotations

GIVEN_MALE = (
    "Jean", "Pierre", "Théo", "Raphaël", "Loïc", "Jérôme", "François", "Benoît", "Hugo", "Léo", "Noé", "Mathéo",
    "Gaël", "Aurélien", "Cédric", "Frédéric", "Sébastien", "Stéphane", "Hervé", "Rémi", "Maël", "Jean-Pierre",
    "Jean-Baptiste", "Pierre-Yves", "Jean-François", "Marc-Antoine", "Louis", "Gabriel", "Arthur", "Nicolas",
    "Thomas", "Mohamed", "Karim", "Yanis", "Joël", "Anthony", "Grégoire", "Timothée", "Nathanaël", "Éric",
)
GIVEN_FEMALE = (
    "Élodie", "Hélène", "Anaïs", "Chloé", "Noémie", "Zoé", "Léa", "Inès", "Maëlle", "Gaëlle", "Océane",
    "Clémence", "Mélanie", "Cécile", "Valérie", "Sophie", "Camille", "Manon", "Emma", "Jade", "Louise",
    "Marie-Hélène", "Anne-Sophie", "Marie-Claire", "Léna", "Agnès", "Bérénice", "Françoise", "Geneviève",
    "Aïcha", "Yasmine", "Fatou", "Éloïse", "Héloïse", "Maïwenn", "Laëtitia", "Salomé", "Anne-Laure",
)
FAMILY = (
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon",
    "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel",
    "Girard", "André", "Lefebvre", "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand",
    "Garnier", "Faure", "Rousseau", "Blanc", "Guérin", "Müller", "Henry", "Roussel", "Perrin", "Morin",
    "Mathieu", "Clément", "Gauthier", "Dumont", "Lopez", "Fontaine", "Chevalier", "Robin", "Ménard", "Lemaître",
    "Bérenger", "Le Goff", "Le Gall", "Lévêque", "Benoît", "Périer", "Després", "Hébert", "Noël", "Texier",
    "Kerhervé", "Castañeda", "Da Silva", "N'Diaye", "D'Almeida", "Martin-Dupré", "Gauthier-Lévêque",
    "Saint-Aubin", "Roux-Mercier", "Lacroix-Bénard", "Éluard", "Œuvrard",
)
# (INSEE COG code, commune, postal code). Corsica (2A/2B) and overseas (97x) included: they shape NIRs.
COMMUNES = (
    ("75056", "Paris", "75011"), ("13055", "Marseille", "13001"), ("69123", "Lyon", "69003"),
    ("31555", "Toulouse", "31000"), ("06088", "Nice", "06000"), ("44109", "Nantes", "44000"),
    ("67482", "Strasbourg", "67000"), ("34172", "Montpellier", "34000"), ("33063", "Bordeaux", "33000"),
    ("59350", "Lille", "59000"), ("35238", "Rennes", "35000"), ("51454", "Reims", "51100"),
    ("76540", "Rouen", "76000"), ("38185", "Grenoble", "38000"), ("21231", "Dijon", "21000"),
    ("49007", "Angers", "49000"), ("29019", "Brest", "29200"), ("63113", "Clermont-Ferrand", "63000"),
    ("2A004", "Ajaccio", "20000"), ("2B033", "Bastia", "20200"), ("2A247", "Porto-Vecchio", "20137"),
    ("2B096", "Corte", "20250"), ("97411", "Saint-Denis", "97400"), ("97209", "Fort-de-France", "97200"),
    ("97105", "Basse-Terre", "97100"),
)
CORSICAN_COMMUNES = tuple(c for c in COMMUNES if c[0][:2] in ("2A", "2B"))
# INSEE codes of countries of birth (99 + country), with the phone region used for people born there.
COUNTRIES = (
    ("99109", "Allemagne", "DE"), ("99134", "Espagne", "ES"), ("99127", "Italie", "IT"),
    ("99131", "Belgique", "BE"), ("99132", "Royaume-Uni", "GB"), ("99139", "Portugal", "PT"),
    ("99350", "Maroc", "MA"), ("99351", "Tunisie", "TN"), ("99352", "Algérie", "DZ"), ("99140", "Suisse", "CH"),
)
STREETS = (
    "rue de la République", "avenue Jean-Jaurès", "boulevard Victor-Hugo", "place de l'Église",
    "chemin des Écoliers", "allée des Tilleuls", "rue du Général-de-Gaulle", "impasse des Mûriers",
    "rue Pasteur", "quai de la Fosse", "rue des Frères-Lumière", "cours Mirabeau",
)
EMAIL_DOMAINS = ("example.fr", "example.com", "example.org", "example.net")
LAB_NAMES = (
    "Biolab", "Labo Santé", "Cerballiance", "Bioaccès", "Synlab", "Eurofins Biomnis", "Biogroup", "Inovie",
    "Laborizon", "Unilabs", "Biopôle", "Océalab", "Alpigène", "Biomed", "LBM des Trois Rivières",
)
# Départements of laboratory FINESS numbers (numeric only: the Luhn digit of 2A/2B is undocumented).
LAB_DEPARTEMENTS = ("75", "13", "69", "31", "06", "44", "67", "34", "33", "59", "35", "51", "76", "38", "21",
                    "49", "29", "63", "92", "93", "94", "97")

# Test mix and the specimen each family is usually taken on (weights).
KIND_WEIGHTS = (("naat", 0.6), ("antigen", 0.3), ("serology", 0.1))
SPECIMENS_BY_KIND = {
    "naat": (("258500001", 0.7), ("697989009", 0.1), ("258529004", 0.05), ("258560004", 0.15)),
    "antigen": (("258500001", 0.7), ("697989009", 0.3)),
    "serology": (("119364003", 0.6), ("119361006", 0.2), ("122555007", 0.2)),
}
# Codes whose name fixes the specimen.
SPECIMEN_FOR_CODE = {"94845-5": "258560004", "94759-8": "258500001", "94565-9": "258500001",
                     "95406-5": "697989009", "95542-7": "258580003"}
