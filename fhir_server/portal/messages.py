"""The portal's words, as data: key -> {"fr": ..., "en": ...}; French is the default.

Templates call `t("key", name=value)`; a missing English text falls back to the French one, a
missing key shows the key itself (a test checks every key used has both languages).
"""

from __future__ import annotations

LANGUAGES = ("fr", "en")
DEFAULT = "fr"

MESSAGES: dict[str, dict[str, str]] = {
    "site.name": {"fr": "SI-DEP — Mes résultats de test", "en": "SI-DEP — My test results"},
    "site.skip": {"fr": "Aller au contenu", "en": "Skip to content"},
    "lang.switch": {"fr": "English", "en": "Français"},
    "lang.switch.label": {"fr": "Read this page in English", "en": "Lire cette page en français"},
    "nav.label": {"fr": "Langue et compte", "en": "Language and account"},
    "form.error": {"fr": "Erreur", "en": "Error"},
    "nav.results": {"fr": "Mes résultats", "en": "My results"},
    "nav.sign_out": {"fr": "Se déconnecter", "en": "Sign out"},
    "nav.home": {"fr": "Retour à l'accueil", "en": "Back to the home page"},
    # landing
    "landing.title": {"fr": "Consulter mon résultat de test", "en": "View my test result"},
    "landing.intro": {
        "fr": "Vous avez reçu un lien personnel par SMS ou par e-mail. Ouvrez-le : cette page le reconnaît "
        "d'elle-même. Vous pouvez aussi coller ci-dessous le lien ou le code qui suit le signe « # ».",
        "en": "You received a personal link by SMS or e-mail. Open it: this page recognises it by itself. "
        "You can also paste below the link, or the code after the “#” sign.",
    },
    "landing.code.label": {"fr": "Lien ou code reçu", "en": "Link or code received"},
    "landing.code.hint": {
        "fr": "Par exemple : la partie après « # » dans le lien reçu.",
        "en": "For instance: the part after “#” in the link you received.",
    },
    "landing.submit": {"fr": "Continuer", "en": "Continue"},
    "landing.or": {
        "fr": "Ou connectez-vous avec votre identité numérique",
        "en": "Or sign in with your digital identity",
    },
    "landing.franceconnect": {"fr": "Se connecter avec FranceConnect", "en": "Sign in with FranceConnect"},
    "landing.empty": {"fr": "Saisissez le lien ou le code reçu.", "en": "Enter the link or the code you received."},
    # link
    "link.invalid.title": {"fr": "Ce lien n'est plus valable", "en": "This link is no longer valid"},
    "link.invalid.body": {
        "fr": "Ce lien n'est plus valable : il a expiré (les résultats restent consultables {months} mois "
        "après le prélèvement) ou il a été mal copié.",
        "en": "This link is no longer valid: it has expired (results can be viewed for {months} months after "
        "sampling) or it was not copied whole.",
    },
    "link.invalid.todo": {
        "fr": "Vérifiez que vous avez copié le lien en entier, connectez-vous avec FranceConnect, ou demandez "
        "votre résultat au laboratoire, à la pharmacie ou au professionnel qui a fait le test.",
        "en": "Check that you copied the whole link, sign in with FranceConnect, or ask for your result at the "
        "laboratory, pharmacy or professional who did the test.",
    },
    # birth date
    "birth.title": {"fr": "Confirmez votre identité", "en": "Confirm your identity"},
    "birth.intro": {
        "fr": "Saisissez la date de naissance de la personne testée (si le test concerne un enfant ou une "
        "personne dont vous avez la charge, saisissez la sienne).",
        "en": "Enter the birth date of the person tested (if the test is a child's or a dependant's, enter theirs).",
    },
    "birth.legend": {"fr": "Date de naissance", "en": "Date of birth"},
    "birth.day": {"fr": "Jour", "en": "Day"},
    "birth.month": {"fr": "Mois", "en": "Month"},
    "birth.year": {"fr": "Année", "en": "Year"},
    "birth.hint": {"fr": "Par exemple : 27 3 1980", "en": "For instance: 27 3 1980"},
    "birth.invalid": {
        "fr": "Date de naissance : saisissez un jour, un mois et une année existants (année sur 4 chiffres).",
        "en": "Date of birth: enter a day, a month and a year that exist (4-digit year).",
    },
    "birth.submit": {"fr": "Recevoir un code", "en": "Get a code"},
    # code
    "code.title": {"fr": "Saisissez le code reçu", "en": "Enter the code you received"},
    "code.intro": {
        "fr": "Un code à 6 chiffres vient d'être envoyé par SMS et/ou e-mail aux coordonnées données lors du "
        "test. Il est valable {minutes} minutes.",
        "en": "A 6-digit code has just been sent by SMS and/or e-mail to the contact details given at the test. "
        "It is valid for {minutes} minutes.",
    },
    "code.label": {"fr": "Code à 6 chiffres", "en": "6-digit code"},
    "code.submit": {"fr": "Valider", "en": "Confirm"},
    "code.resend": {"fr": "Recevoir un nouveau code", "en": "Get a new code"},
    "code.resend.hint": {
        "fr": "Vous pouvez demander un nouveau code {seconds} secondes après le précédent.",
        "en": "You can ask for a new code {seconds} seconds after the previous one.",
    },
    "code.invalid": {"fr": "Le code compte 6 chiffres.", "en": "The code has 6 digits."},
    "code.expired": {
        "fr": "Ce code n'est plus valable (expiré ou déjà utilisé) : demandez-en un nouveau.",
        "en": "This code is no longer valid (expired or already used): ask for a new one.",
    },
    "code.no_contact": {
        "fr": "Nous n'avons aucun numéro de téléphone mobile ni adresse e-mail pour vous envoyer un code. "
        "Connectez-vous avec FranceConnect, ou demandez votre résultat à qui a fait le test.",
        "en": "We have no mobile number or e-mail address to send you a code. Sign in with FranceConnect, or ask "
        "for your result at the place where you were tested.",
    },
    "wrong": {
        "fr": "Les informations saisies ne permettent pas de vous identifier. Vérifiez-les et réessayez.",
        "en": "The information entered does not identify you. Check it and try again.",
    },
    # limits
    "locked": {
        "fr": "Trop d'essais sur ce lien : il est bloqué pendant {minutes} minutes. Réessayez plus tard, ou "
        "connectez-vous avec FranceConnect.",
        "en": "Too many tries on this link: it is locked for {minutes} minutes. Try again later, or sign in with "
        "FranceConnect.",
    },
    "too_soon": {
        "fr": "Un code vient d'être envoyé : patientez {seconds} secondes avant d'en demander un autre.",
        "en": "A code has just been sent: wait {seconds} seconds before asking for another.",
    },
    "too_many": {
        "fr": "Vous avez demandé trop de codes pour ce lien : réessayez dans {minutes} minutes.",
        "en": "You asked for too many codes for this link: try again in {minutes} minutes.",
    },
    "unavailable": {
        "fr": "L'envoi des codes est momentanément indisponible. Nous en sommes désolés : réessayez dans "
        "quelques minutes.",
        "en": "Codes cannot be sent right now. We are sorry: try again in a few minutes.",
    },
    # results
    "results.title": {"fr": "Mes résultats de test", "en": "My test results"},
    "results.intro": {
        "fr": "Les tests des {months} derniers mois, du plus récent au plus ancien.",
        "en": "Tests of the last {months} months, newest first.",
    },
    "results.none": {"fr": "Aucun résultat sur cette période.", "en": "No result in this period."},
    "results.test": {"fr": "Test", "en": "Test"},
    "results.sampled": {"fr": "Prélèvement", "en": "Sampling"},
    "results.result": {"fr": "Résultat", "en": "Result"},
    "results.open": {"fr": "Voir le détail", "en": "See details"},
    "results.open.label": {"fr": "Voir le détail du test du {date}", "en": "See details of the test of {date}"},
    "result.title": {"fr": "Résultat du test du {date}", "en": "Result of the test of {date}"},
    "result.lab": {"fr": "Réalisé par", "en": "Performed by"},
    "result.pdf": {"fr": "Télécharger le certificat (PDF)", "en": "Download the certificate (PDF)"},
    "result.qr": {"fr": "QR code du certificat européen", "en": "QR code of the EU certificate"},
    "result.qr.alt": {
        "fr": "QR code du certificat COVID numérique de l'UE de ce test",
        "en": "QR code of this test's EU digital COVID certificate",
    },
    "result.wallet": {"fr": "Importer dans TousAntiCovid", "en": "Import into TousAntiCovid"},
    "result.no_dcc": {
        "fr": "Ce résultat ne donne pas lieu à un certificat numérique européen : la fiche de résultat PDF reste "
        "disponible.",
        "en": "This result does not give an EU digital COVID certificate: the PDF result sheet is still available.",
    },
    "result.declaration": {
        "fr": "Déclarer mon test positif dans TousAntiCovid",
        "en": "Declare my positive test in TousAntiCovid",
    },
    "result.declaration.code": {"fr": "Code de déclaration", "en": "Declaration code"},
    "result.declaration.until": {
        "fr": "À saisir une seule fois dans l'application TousAntiCovid, avant le {date}.",
        "en": "To enter once in the TousAntiCovid app, before {date}.",
    },
    "result.declaration.qr": {
        "fr": "QR code du code de déclaration, à scanner avec TousAntiCovid",
        "en": "QR code of the declaration code, to scan with TousAntiCovid",
    },
    "result.no_sheet.title": {"fr": "Fiche de résultat indisponible", "en": "Result sheet unavailable"},
    "result.no_sheet": {
        "fr": "La fiche de ce résultat ne peut pas être produite ici : demandez-la à qui a fait le test.",
        "en": "This result's sheet cannot be made here: ask for it where you were tested.",
    },
    "result.back": {"fr": "Retour à mes résultats", "en": "Back to my results"},
    "kind.naat": {"fr": "Test RT-PCR (amplification génique)", "en": "RT-PCR test (nucleic acid amplification)"},
    "kind.antigen": {"fr": "Test antigénique rapide", "en": "Rapid antigen test"},
    "kind.serology": {"fr": "Test sérologique", "en": "Serology test"},
    "kind.unknown": {"fr": "Test", "en": "Test"},
    "value.detected": {"fr": "Positif (SARS-CoV-2 détecté)", "en": "Positive (SARS-CoV-2 detected)"},
    "value.not-detected": {"fr": "Négatif (SARS-CoV-2 non détecté)", "en": "Negative (SARS-CoV-2 not detected)"},
    "value.inconclusive": {"fr": "Non conclusif", "en": "Inconclusive"},
    "value.unknown": {"fr": "Voir la fiche de résultat", "en": "See the result sheet"},
    "signed_out.title": {"fr": "Vous êtes déconnecté(e)", "en": "You are signed out"},
    "signed_out.body": {
        "fr": "Pour revenir, ouvrez à nouveau le lien reçu ou connectez-vous avec FranceConnect.",
        "en": "To come back, open the link you received again or sign in with FranceConnect.",
    },
    "session.expired": {
        "fr": "Votre session a expiré : recommencez depuis le lien reçu.",
        "en": "Your session has expired: start again from the link you received.",
    },
    # errors
    "error.400.title": {"fr": "Requête invalide", "en": "Bad request"},
    "error.400.body": {
        "fr": "Le formulaire a expiré ou n'a pas été reconnu : revenez à la page précédente, rechargez-la et "
        "recommencez.",
        "en": "The form has expired or was not recognised: go back, reload the page and try again.",
    },
    "error.403.title": {"fr": "Accès refusé", "en": "Access denied"},
    "error.403.body": {"fr": "Cette page ne vous est pas accessible.", "en": "You may not see this page."},
    "error.404.title": {"fr": "Page introuvable", "en": "Page not found"},
    "error.404.body": {
        "fr": "Cette page n'existe pas ou ne vous est pas accessible.",
        "en": "This page does not exist or is not available to you.",
    },
    "error.405.title": {"fr": "Action impossible", "en": "Not allowed"},
    "error.405.body": {"fr": "Cette page ne s'utilise pas ainsi.", "en": "This page is not used that way."},
    "error.429.title": {"fr": "Veuillez patienter", "en": "Please wait"},
    "error.429.body": {"fr": "Trop de demandes : réessayez plus tard.", "en": "Too many requests: try again later."},
    "error.500.title": {"fr": "Erreur du service", "en": "Service error"},
    "error.500.body": {
        "fr": "Une erreur s'est produite de notre côté. Elle est enregistrée ; réessayez dans quelques minutes.",
        "en": "Something went wrong on our side. It is recorded; try again in a few minutes.",
    },
    "error.503.title": {"fr": "Service momentanément indisponible", "en": "Service temporarily unavailable"},
    "error.503.body": {
        "fr": "Le service est momentanément indisponible : réessayez dans quelques minutes.",
        "en": "The service is temporarily unavailable: try again in a few minutes.",
    },
    # FranceConnect (portal/franceconnect.py)
    "fc.refused.title": {"fr": "La connexion n'a pas abouti", "en": "The sign-in did not succeed"},
    "fc.refused.body": {
        "fr": "La connexion avec FranceConnect n'a pas abouti. Réessayez, ou ouvrez le lien reçu par SMS ou courriel.",
        "en": "Signing in with FranceConnect did not succeed. Try again, or open the link you received by text message or e-mail.",
    },
    "fc.mismatch.title": {"fr": "Aucun résultat à votre nom", "en": "No result in your name"},
    "fc.mismatch.rule": {
        "fr": "Avec FranceConnect, un résultat n'est montré que si l'identité de votre compte (nom de naissance, "
        "prénoms, date de naissance, sexe, lieu de naissance) est exactement celle transmise par le laboratoire, "
        "accents compris (les majuscules, tirets et espaces ne comptent pas).",
        "en": "With FranceConnect, a result is shown only when your account's identity (birth name, given names, "
        "date of birth, sex, place of birth) is exactly the one the laboratory sent, accents included (capitals, "
        "hyphens and spaces do not count).",
    },
    "fc.case.A": {
        "fr": "Aucun résultat ne correspond à votre identité. Si vous n'avez reçu ni SMS ni courriel, demandez à "
        "votre laboratoire de corriger vos coordonnées et de transmettre à nouveau votre dossier : vous recevrez "
        "alors le lien d'accès à vos résultats.",
        "en": "No result matches your identity. If you received neither a text message nor an e-mail, ask your "
        "laboratory to correct your contact details and send your record again: you will then receive the link "
        "to your results.",
    },
    "fc.case.near": {
        "fr": "Un dossier porte vos nom de naissance et date de naissance, mais : {traits} diffère de votre identité FranceConnect.",
        "en": "A record has your birth name and date of birth, but: {traits} differs from your FranceConnect identity.",
    },
    "fc.case.B": {
        "fr": "Utilisez le lien reçu par SMS ou courriel, ou demandez au laboratoire de corriger votre identité et de transmettre à nouveau le dossier.",
        "en": "Use the link you received by text message or e-mail, or ask the laboratory to correct your identity and send the record again.",
    },
    "fc.case.C": {
        "fr": "Demandez au laboratoire de corriger votre identité et vos coordonnées, puis de transmettre à nouveau le dossier.",
        "en": "Ask the laboratory to correct your identity and contact details, then to send the record again.",
    },
    "fc.mismatch.leave": {"fr": "Me déconnecter de FranceConnect", "en": "Sign out of FranceConnect"},
    "fc.mismatch.link": {
        "fr": "J'ai reçu un lien par SMS ou courriel",
        "en": "I received a link by text message or e-mail",
    },
    "fc.trait.family": {"fr": "le nom de naissance", "en": "the birth name"},
    "fc.trait.given": {"fr": "les prénoms", "en": "the given names"},
    "fc.trait.birthDate": {"fr": "la date de naissance", "en": "the date of birth"},
    "fc.trait.gender": {"fr": "le sexe", "en": "the sex"},
    "fc.trait.birthPlace": {"fr": "le lieu de naissance", "en": "the place of birth"},
}


def text(key: str, lang: str, **values) -> str:
    entry = MESSAGES.get(key)
    if entry is None:
        return key
    template = entry.get(lang) or entry[DEFAULT]
    return template.format(**values) if values else template
